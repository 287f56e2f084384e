#!/usr/bin/env Rscript
## make_frontend_reference.R
##
## Writes real data sets whose rows are sorted by a fixed-effect factor (the
## case that made the fast design path drop the factor) as compact CSV files,
## and lme4's REML fits of them, read back from those same CSV files, to
## tests/data/reference/frontend_reference.json.
##
## Run from the repository root:
##     Rscript tests/data/r/make_frontend_reference.R
##
## Text columns become factors with their levels in C-locale (radix) order,
## the order pandas and formulaic sort text in, so that the coefficients are
## the same parametrization as reml_engine's.  The unused-level cases keep an
## explicit level order (the CSV is the same): they record that lme4 drops
## unused levels (model.frame(drop.unused.levels = TRUE)) and respects the
## order of the levels it keeps.
##
## Every fit is done twice, from lme4's default start and from the best point
## of a dense theta grid, and the lower criterion is kept (as
## make_extra_reference.R does); both are recorded.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

ref_dir <- file.path("tests", "data", "reference")
out_file <- file.path(ref_dir, "frontend_reference.json")
if (!dir.exists(ref_dir)) stop("run this script from the repository root")

env <- new.env()
data(Machines, Orthodont, Milk, package = "nlme", envir = env)
data(Exam, package = "mlmRev", envir = env)
data(warpbreaks, package = "datasets", envir = env)

plain <- function(d) {
  ## groupedData classes and ordered factors away: plain columns of text/numbers.
  d <- as.data.frame(d)
  for (k in names(d)) if (is.factor(d[[k]])) d[[k]] <- as.character(d[[k]])
  attributes(d)[setdiff(names(attributes(d)), c("names", "row.names", "class"))] <- NULL
  class(d) <- "data.frame"
  d
}

exports <- list(
  machines = plain(env$Machines)[, c("score", "Machine", "Worker")],
  orthodont = plain(env$Orthodont)[, c("distance", "age", "Sex", "Subject")],
  warpbreaks = plain(env$warpbreaks)[, c("breaks", "wool", "tension")],
  milk = plain(env$Milk)[, c("protein", "Time", "Diet", "Cow")],
  exam = plain(env$Exam)[, c("normexam", "standLRT", "schgend", "type", "school")]
)
for (name in names(exports)) {
  write.csv(exports[[name]], file.path(ref_dir, paste0(name, ".csv")), row.names = FALSE)
}

read_back <- function(file) {
  d <- read.csv(file.path(ref_dir, file), stringsAsFactors = FALSE)
  for (k in names(d)) if (is.character(d[[k]])) {
    d[[k]] <- factor(d[[k]], levels = sort(unique(d[[k]]), method = "radix"))
  }
  d
}

THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e3), length.out = 2000)))
CRIT_TOL <- 1e-7

fit_case <- function(file, formula, group, dat = read_back(file), note = NULL) {
  form <- as.formula(formula)
  ## The grouping column is a factor whatever its labels (Machines' Worker are digits).
  dat[[group]] <- factor(as.character(dat[[group]]))
  m_def <- suppressMessages(lmer(form, data = dat, REML = TRUE))
  devfun <- lmer(form, data = dat, REML = TRUE, devFunOnly = TRUE)
  vals <- vapply(THETA_GRID, function(th) devfun(th), numeric(1))
  best <- THETA_GRID[which.min(vals)]
  m_rs <- suppressMessages(lmer(form, data = dat, REML = TRUE, start = list(theta = best)))
  ## The criterion is lme4's objective at the fitted theta: REMLcrit() reads a
  ## stored log-determinant that lme4 leaves uninitialized when X has no columns.
  crit <- function(m) devfun(getME(m, "theta"))
  use_restart <- crit(m_rs) < crit(m_def) - CRIT_TOL
  m <- if (use_restart) m_rs else m_def
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    file = file,
    formula = formula,
    group = group,
    criterion = crit(m),
    criterion_default = crit(m_def),
    criterion_restart = crit(m_rs),
    used = if (use_restart) "restart" else "default",
    coef_names = names(fixef(m)),
    fixef = unname(fixef(m)),
    se = unname(sqrt(diag(as.matrix(vcov(m))))),
    var_group = vc$vcov[vc$grp == group],
    sigma2 = sigma(m)^2,
    theta = unname(getME(m, "theta")),
    nobs = nobs(m),
    ngroups = unname(ngrps(m))
  )
  if (!is.null(note)) out$note <- note
  out
}

cases <- list(
  machines = fit_case("machines.csv", "score ~ Machine + (1|Worker)", "Worker"),
  orthodont = fit_case("orthodont.csv", "distance ~ age + Sex + (1|Subject)", "Subject"),
  warpbreaks = fit_case("warpbreaks.csv", "breaks ~ wool + (1|tension)", "tension"),
  milk = fit_case("milk.csv", "protein ~ Time + Diet + (1|Cow)", "Cow"),
  exam = fit_case("exam.csv", "normexam ~ standLRT + schgend + type + (1|school)", "school"),
  sim_negative_icc = fit_case("sim_negative_icc.csv", "y ~ x1 + x2 + cat + (1|g)", "g")
)

## Machine as a factor with an unused first level "Z": lme4 drops it, so the
## reference level is A, as without it.
d <- read_back("machines.csv")
d$Machine <- factor(as.character(d$Machine), levels = c("Z", "A", "B", "C"))
cases$machines_unused_level <- fit_case(
  "machines.csv", "score ~ Machine + (1|Worker)", "Worker", dat = d,
  note = "Machine levels c('Z', 'A', 'B', 'C'); Z has no rows")
## Levels in a chosen order (C first): C is the reference level.
d <- read_back("machines.csv")
d$Machine <- factor(as.character(d$Machine), levels = c("C", "A", "B"))
cases$machines_level_order <- fit_case(
  "machines.csv", "score ~ Machine + (1|Worker)", "Worker", dat = d,
  note = "Machine levels c('C', 'A', 'B')")

## No fixed effects: lme4 fits y ~ 0 + (1|g), and lmerTest's type III table of
## it (and of the intercept-only model) has no rows.
cases$machines_no_fixed <- fit_case("machines.csv", "score ~ 0 + (1|Worker)", "Worker")
d <- read_back("machines.csv")
d$Worker <- factor(as.character(d$Worker))
cases$machines_no_fixed$anova_type3_rows <- nrow(anova(lmerTest::lmer(score ~ 0 + (1|Worker), data = d)))
cases$machines_no_fixed$anova_type3_rows_intercept_only <-
  nrow(anova(lmerTest::lmer(score ~ 1 + (1|Worker), data = d)))

cases$`_about` <- list(
  script = "tests/data/r/make_frontend_reference.R",
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  nlme = as.character(packageVersion("nlme")),
  mlmRev = as.character(packageVersion("mlmRev")),
  lmerTest = as.character(packageVersion("lmerTest")),
  fields = paste(
    "criterion: REML criterion (-2 REML log-likelihood) of the kept fit;",
    "coef_names/fixef/se in lme4's column order; var_group, sigma2: variance components;",
    "theta = sd_group / sigma")
)
write_json(cases, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote", out_file, "\n")
