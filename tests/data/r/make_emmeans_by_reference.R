# emmeans' marginal means within the levels of another factor (`by =`) and their contrasts,
# and the Holm adjustment, on data bundled with reml_engine, one random term and several:
#   oats_int   yield ~ factor(nitro) * Variety + (1 | Block/Variety)  (Python: C(nitro) * Variety)
#   oats_int1  yield ~ factor(nitro) * Variety + (1 | Block)          (one term)
#   exam       normexam ~ standLRT + sex + schgend + (1 | school)     (sex by schgend, no interaction)
#   milk       protein ~ Time + Diet + (1 | Cow)                      (Holm without by)
# For each (spec, by): emmeans(m, spec, by = by) with Satterthwaite's df (and Kenward-Roger's
# for REML fits below 3000 rows); pairs() with adjust = "tukey", "holm", "sidak", "bonferroni",
# "none" within each level of `by` (emmeans' families), with confidence intervals by
# confint(..., adjust =) (emmeans gives Bonferroni intervals for Holm); and one custom
# contrast family per `by` level (first level against the last, the first against the
# mean of the others) with adjust = "holm".
#
# Run from the repository root (a few seconds):
#
#     Rscript tests/data/r/make_emmeans_by_reference.R
#
# Writes tests/data/emmeans_by_reference.json.
suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(emmeans)
  library(jsonlite)
})

oats <- as.data.frame(nlme::Oats)
oats$Block <- factor(as.character(oats$Block))
oats$Variety <- factor(as.character(oats$Variety))
data_sets <- list(oats = oats, exam = as.data.frame(mlmRev::Exam), milk = as.data.frame(nlme::Milk))

cases <- list(
  oats_int = list(data = "oats", formula = "yield ~ factor(nitro) * Variety + (1|Block/Variety)",
                  python_formula = "yield ~ C(nitro) * Variety + (1|Block/Variety)",
                  specs = list(c("Variety", "nitro"), c("nitro", "Variety")), kr = TRUE),
  oats_int1 = list(data = "oats", formula = "yield ~ factor(nitro) * Variety + (1|Block)",
                   python_formula = "yield ~ C(nitro) * Variety + (1|Block)",
                   specs = list(c("Variety", "nitro")), kr = TRUE),
  exam = list(data = "exam", formula = "normexam ~ standLRT + sex + schgend + (1|school)",
              specs = list(c("sex", "schgend"), c("schgend", "sex")), kr = FALSE),
  milk = list(data = "milk", formula = "protein ~ Time + Diet + (1|Cow)", specs = list(c("Diet", NA)), kr = TRUE)
)

tight <- lmerControl(optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 1e-12, ftol_rel = 1e-14,
                                    maxeval = 1e5))

by_column <- function(table, by) if (is.na(by)) rep(NA_character_, nrow(table)) else as.character(table[[by]])

contrast_values <- function(con, adjust, by) {
  tests <- as.data.frame(summary(con, adjust = adjust))
  intervals <- as.data.frame(confint(con, adjust = adjust))
  list(by = by_column(tests, by), contrast = as.character(tests$contrast), estimate = tests$estimate,
       se = tests$SE, df = tests$df, t = tests$t.ratio, p = tests$p.value,
       lower = intervals$lower.CL, upper = intervals$upper.CL)
}

emmeans_values <- function(m, spec, by, df_method) {
  emm <- if (is.na(by)) emmeans(m, spec, lmer.df = df_method) else emmeans(m, spec, by = by, lmer.df = df_method)
  table <- as.data.frame(summary(emm))
  out <- list(by_level = by_column(table, by), level = as.character(table[[spec]]), emmean = table$emmean,
              se = table$SE, df = table$df, lower = table$lower.CL, upper = table$upper.CL, pairs = list())
  for (adjust in c("tukey", "holm", "sidak", "bonferroni", "none")) {
    out$pairs[[adjust]] <- contrast_values(pairs(emm), adjust, by)
  }
  k <- length(unique(out$level))
  weights <- list(first_vs_last = c(1, rep(0, k - 2), -1), first_vs_rest = c(1, rep(-1 / (k - 1), k - 1)))
  out$custom <- c(list(weights = weights, adjust = "holm"), contrast_values(contrast(emm, weights), "holm", by))
  out
}

emm_options(lmerTest.limit = 5000, pbkrtest.limit = 5000)  # exam has 4059 rows
out <- list()
for (label in names(cases)) {
  case <- cases[[label]]
  for (REML in c(TRUE, FALSE)) {
    kind <- if (REML) "reml" else "ml"
    m <- lmer(as.formula(case$formula), data = data_sets[[case$data]], REML = REML, control = tight)
    for (pair in case$specs) {
      spec <- pair[1]
      by <- pair[2]
      methods <- c(satterthwaite = "satterthwaite")
      if (REML && isTRUE(case$kr)) methods <- c(methods, `kenward-roger` = "kenward-roger")
      for (method in names(methods)) {
        key <- paste(label, kind, if (is.na(by)) spec else paste(spec, by, sep = "|"), method, sep = "/")
        out[[key]] <- c(list(data = case$data, formula = if (is.null(case$python_formula)) case$formula else case$python_formula,
                             r_formula = case$formula, REML = REML, spec = spec,
                             by = if (is.na(by)) NULL else by, ddf = method,
                             criterion = if (REML) REMLcrit(m) else deviance(m)),
                        emmeans_values(m, spec, by, methods[[method]]))
      }
    }
  }
}

about <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  emmeans = as.character(packageVersion("emmeans")),
  pbkrtest = as.character(packageVersion("pbkrtest"))
)
writeLines(toJSON(list(`_about` = about, emmeans = out), digits = NA, auto_unbox = TRUE, pretty = TRUE,
                  na = "null"),
           "tests/data/emmeans_by_reference.json")
