# Type III tables of fits with several random-intercept terms (issue 12): lmerTest's
# anova(m, type = 3) with ddf = "Satterthwaite" and "Kenward-Roger" (pbkrtest), for fixed
# parts with factors, an interaction and numeric covariates:
#   oats_factor   nlme's Oats   yield ~ Variety * factor(nitro) + (1 | Block/Variety)
#   oats_numeric  nlme's Oats   yield ~ Variety * nitro + (1 | Block/Variety)
#   cake          lme4's cake   angle ~ recipe * temperature + (1 | replicate) + (1 | recipe:replicate)
#                 (temperature an ordered factor: contr.poly, recipe contr.treatment)
#   scots         mlmRev's ScotsSec  attain ~ sex * factor(social) + verbal + (1 | primary) + (1 | second)
#                 (crossed primary x secondary schools, 3435 rows: Satterthwaite only, as the
#                 engine's dense Kenward-Roger stops at 3000 rows)
#   exam_cells    the school x intake x sex cells of mlmRev's Exam (cell means, as in
#                 make_terms_kr_exam_reference.R and docs/several_terms.md)
#                 normexam ~ standLRT * sex + (1 | school/intake); and weighted by the
#                 cells' sizes (exam_cells_weighted, Satterthwaite only)
#   sim_crossed   simulated: 36 subjects x 24 items, 80% of the cells observed,
#                 y ~ A * B + x + (1 | subj) + (1 | item) (A within subjects, B between items)
# For each case the REML fit (and for oats_numeric and sim_crossed the ML fit, Satterthwaite
# only) with lme4's default start and tight optimizer tolerances (`tight` below); the
# criterion lme4 reached (REMLcrit or deviance) and theta are written so that a test can check that lme4 sits at the engine's optimum before
# comparing the tables. `python_formula` (and `python_contrasts`) is the same model in the
# engine's formula syntax: factor(x) is C(x) there, and R's term labels map to formulaic's
# by that spelling.
#
# Run from the repository root (about a minute):
#
#     Rscript tests/data/r/make_terms_type3_reference.R
#
# Writes tests/data/multi/type3_reference.json, tests/data/multi/cake.csv,
# tests/data/multi/scots.csv, tests/data/multi/exam_cells.csv and
# tests/data/multi/sim_crossed_type3.csv.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(pbkrtest)
  library(mlmRev)
  library(jsonlite)
})

dir <- "tests/data/multi"

# -- data ------------------------------------------------------------------------------
cake_data <- lme4::cake[, c("replicate", "recipe", "temperature", "angle")]
# Written as numbers (the engine reads C(temperature)); read back as R's ordered factor.
cake_out <- transform(cake_data, temperature = as.integer(as.character(temperature)))
write.csv(cake_out, file.path(dir, "cake.csv"), row.names = FALSE)

scots_data <- mlmRev::ScotsSec[, c("attain", "verbal", "sex", "social", "primary", "second")]
write.csv(scots_data, file.path(dir, "scots.csv"), row.names = FALSE)

exam_cells <- aggregate(cbind(normexam, standLRT) ~ school + intake + sex, data = mlmRev::Exam, FUN = mean)
exam_counts <- aggregate(normexam ~ school + intake + sex, data = mlmRev::Exam, FUN = length)
exam_cells$n <- exam_counts$normexam  # the same rows in the same order (the same grouping)
write.csv(exam_cells, file.path(dir, "exam_cells.csv"), row.names = FALSE)

set.seed(20261130)
n_subj <- 36
n_item <- 24
grid <- expand.grid(subj = sprintf("s%02d", seq_len(n_subj)), item = sprintf("i%02d", seq_len(n_item)),
                    stringsAsFactors = FALSE)
grid <- grid[runif(nrow(grid)) < 0.8, ]
grid$A <- ifelse((match(grid$subj, unique(grid$subj)) + match(grid$item, unique(grid$item))) %% 2 == 0,
                 "a1", "a2")
grid$B <- c("b1", "b2", "b3")[(match(grid$item, sort(unique(grid$item))) - 1) %% 3 + 1]
grid$x <- round(rnorm(nrow(grid)), 3)
subj_effect <- rnorm(n_subj, sd = 0.8)
item_effect <- rnorm(n_item, sd = 0.5)
cell_mean <- c(a1.b1 = 0, a2.b1 = 0.4, a1.b2 = 0.3, a2.b2 = 0.5, a1.b3 = -0.2, a2.b3 = 0.6)
grid$y <- round(cell_mean[paste(grid$A, grid$B, sep = ".")] + 0.3 * grid$x +
                  subj_effect[match(grid$subj, sprintf("s%02d", seq_len(n_subj)))] +
                  item_effect[match(grid$item, sprintf("i%02d", seq_len(n_item)))] + rnorm(nrow(grid)), 4)
rownames(grid) <- NULL
write.csv(grid, file.path(dir, "sim_crossed_type3.csv"), row.names = FALSE)

read_case <- function(file, factors) {
  data <- read.csv(file.path(dir, file), colClasses = setNames(rep("character", length(factors)), factors))
  for (f in factors) data[[f]] <- factor(data[[f]])
  data
}

cases <- list(
  oats_factor = list(file = "oats.csv", factors = c("Block", "Variety"),
                     formula = yield ~ Variety * factor(nitro) + (1 | Block/Variety),
                     python = "yield ~ Variety * C(nitro) + (1|Block/Variety)", kr = TRUE, ml = FALSE),
  oats_numeric = list(file = "oats.csv", factors = c("Block", "Variety"),
                      formula = yield ~ Variety * nitro + (1 | Block/Variety),
                      python = "yield ~ Variety * nitro + (1|Block/Variety)", kr = TRUE, ml = TRUE),
  cake = list(file = "cake.csv", factors = c("replicate", "recipe"),
              formula = angle ~ recipe * temperature + (1 | replicate) + (1 | recipe:replicate),
              python = "angle ~ recipe * C(temperature) + (1|replicate) + (1|recipe:replicate)",
              python_contrasts = list(temperature = "contr.poly"), ordered = "temperature", kr = TRUE, ml = FALSE),
  scots = list(file = "scots.csv", factors = c("sex", "primary", "second"),
               formula = attain ~ sex * factor(social) + verbal + (1 | primary) + (1 | second),
               python = "attain ~ sex * C(social) + verbal + (1|primary) + (1|second)", kr = FALSE, ml = FALSE),
  exam_cells = list(file = "exam_cells.csv", factors = c("school", "intake", "sex"),
                    formula = normexam ~ standLRT * sex + (1 | school/intake),
                    python = "normexam ~ standLRT * sex + (1|school/intake)", kr = TRUE, ml = FALSE),
  # Prior weights (lme4's precision weights): Satterthwaite only, as pbkrtest's
  # Kenward-Roger takes the residual's derivative as the identity whatever the weights.
  exam_cells_weighted = list(file = "exam_cells.csv", factors = c("school", "intake", "sex"),
                             formula = normexam ~ standLRT * sex + (1 | school/intake), weights = "n",
                             python = "normexam ~ standLRT * sex + (1|school/intake)", kr = FALSE, ml = FALSE),
  sim_crossed = list(file = "sim_crossed_type3.csv", factors = c("subj", "item", "A", "B"),
                     formula = y ~ A * B + x + (1 | subj) + (1 | item),
                     python = "y ~ A * B + x + (1|subj) + (1|item)", kr = TRUE, ml = TRUE)
)

# lme4's default optimizer (nloptwrap's BOBYQA) stops within about 1e-5 of theta's
# optimum, which moves F and p of the weighted Exam cells by 1e-4 relative; tighter
# tolerances put it at the optimum the engine finds (same default start).
tight <- lmerControl(optCtrl = list(ftol_abs = 1e-13, ftol_rel = 1e-15, xtol_abs = 1e-10, xtol_rel = 1e-12,
                                    maxeval = 1e5))

table_rows <- function(table) {
  list(term = rownames(table), sum_sq = unname(table[["Sum Sq"]]), mean_sq = unname(table[["Mean Sq"]]),
       num_df = unname(table[["NumDF"]]), den_df = unname(table[["DenDF"]]),
       f_value = unname(table[["F value"]]), p_value = unname(table[["Pr(>F)"]]))
}

fit_values <- function(case, data, REML) {
  args <- list(case$formula, data = data, REML = REML, control = tight)
  if (!is.null(case$weights)) args$weights <- data[[case$weights]]
  m <- do.call(lmer, args)
  out <- list(criterion = if (REML) REMLcrit(m) else deviance(m), theta = unname(getME(m, "theta")),
              theta_terms = names(getME(m, "theta")), nobs = nobs(m),
              satterthwaite = table_rows(anova(m, type = 3, ddf = "Satterthwaite")))
  if (REML && case$kr) out$kenward_roger <- table_rows(anova(m, type = 3, ddf = "Kenward-Roger"))
  out
}

result <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  data <- read_case(case$file, case$factors)
  if (!is.null(case$ordered)) data[[case$ordered]] <- factor(data[[case$ordered]], ordered = TRUE)
  entry <- list(file = case$file, formula = paste(deparse(case$formula), collapse = " "),
                python_formula = case$python, reml = fit_values(case, data, TRUE))
  # The REML criterion depends on the coding (log|X'V^-1X|): the engine's fit compared
  # with lme4's criterion is coded as R codes it (contr.poly for the ordered factor).
  if (!is.null(case$python_contrasts)) entry$python_contrasts <- case$python_contrasts
  if (!is.null(case$weights)) entry$weights <- case$weights
  if (case$ml) entry$ml <- fit_values(case, data, FALSE)
  result[[name]] <- entry
}
result[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                           lmerTest = as.character(packageVersion("lmerTest")),
                           pbkrtest = as.character(packageVersion("pbkrtest")),
                           script = "tests/data/r/make_terms_type3_reference.R")
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE), file.path(dir, "type3_reference.json"))
