#!/usr/bin/env Rscript
## make_datasets_reference.R
##
## Writes tests/data/reference/datasets_reference.json: what R knows about the
## data sets that reml_engine.datasets ships, taken from R's own objects (not
## from the package's CSV files), and one lme4 REML fit with a single random
## intercept on each. tests/frontend/test_datasets.py compares both with what
## reml_engine.datasets returns.
##
## Run from the repository root:
##     Rscript tests/data/r/make_datasets_reference.R
##
## facts[name]: `object`, `package`, `nrow`, `ncol`, and per column (in R's
## order) `name`, `class` (R's class vector), `type` ("double", "integer",
## "factor", "ordered", "logical"), `levels` (factors), `n_missing`, and
## `weighted_sum` = sum_i i * v_i over rows i = 1..n, where v is the value for
## numbers and the level code (1 = first level) for factors. The weighted sum
## changes when a value, a level order or the row order changes.
##
## fits[label]: `dataset`, `formula`, `group`, `criterion` (lme4's REML
## objective at the kept theta), `coef_names`, `fixef`, `se` (lme4's column
## order; factor levels in R's order, so the names are those reml_engine gives
## after removing formulaic's "[T.", "]"), `var_group`, `sigma2`, `theta`,
## `nobs`, `ngroups`, and the default/restart bookkeeping of
## make_frontend_reference.R (the fit is done from lme4's default start and
## from the best point of a theta grid; the lower criterion is kept).
## It takes about a minute (most of it the theta grid on InstEval, 73,421 rows).

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

ref_dir <- file.path("tests", "data", "reference")
out_file <- file.path(ref_dir, "datasets_reference.json")
if (!dir.exists(ref_dir)) stop("run this script from the repository root")

SOURCES <- list(
  sleepstudy = c("sleepstudy", "lme4"),
  dyestuff = c("Dyestuff", "lme4"),
  dyestuff2 = c("Dyestuff2", "lme4"),
  penicillin = c("Penicillin", "lme4"),
  pastes = c("Pastes", "lme4"),
  insteval = c("InstEval", "lme4"),
  oats = c("Oats", "nlme"),
  machines = c("Machines", "nlme"),
  orthodont = c("Orthodont", "nlme"),
  milk = c("Milk", "nlme"),
  exam = c("Exam", "mlmRev"),
  warpbreaks = c("warpbreaks", "datasets")
)

load_r <- function(object, package) {
  env <- new.env()
  data(list = object, package = package, envir = env)
  env[[object]]
}

column_type <- function(v) {
  if (is.ordered(v)) return("ordered")
  if (is.factor(v)) return("factor")
  if (is.logical(v)) return("logical")
  if (is.integer(v)) return("integer")
  if (is.double(v)) return("double")
  stop("unexpected column type")
}

facts <- list()
data_sets <- list()
for (name in names(SOURCES)) {
  d <- load_r(SOURCES[[name]][1], SOURCES[[name]][2])
  data_sets[[name]] <- d
  columns <- lapply(names(d), function(k) {
    v <- d[[k]]
    out <- list(name = k, class = class(v), type = column_type(v), n_missing = sum(is.na(v)))
    if (is.factor(v)) out$levels <- levels(v)
    out$weighted_sum <- sum(seq_along(v) * as.numeric(if (is.factor(v)) as.integer(v) else v), na.rm = TRUE)
    out
  })
  facts[[name]] <- list(object = SOURCES[[name]][1], package = SOURCES[[name]][2],
                        nrow = nrow(d), ncol = ncol(d), columns = columns)
}

THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e3), length.out = 2000)))
CRIT_TOL <- 1e-7

fit_case <- function(dataset, formula, group) {
  dat <- as.data.frame(data_sets[[dataset]])
  form <- as.formula(formula)
  m_def <- suppressMessages(lmer(form, data = dat, REML = TRUE))
  devfun <- lmer(form, data = dat, REML = TRUE, devFunOnly = TRUE)
  vals <- vapply(THETA_GRID, function(th) devfun(th), numeric(1))
  best <- THETA_GRID[which.min(vals)]
  m_rs <- suppressMessages(lmer(form, data = dat, REML = TRUE, start = list(theta = best)))
  crit <- function(m) devfun(getME(m, "theta"))
  use_restart <- crit(m_rs) < crit(m_def) - CRIT_TOL
  m <- if (use_restart) m_rs else m_def
  vc <- as.data.frame(VarCorr(m))
  list(
    dataset = dataset,
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
}

fits <- list(
  sleepstudy = fit_case("sleepstudy", "Reaction ~ Days + (1|Subject)", "Subject"),
  dyestuff = fit_case("dyestuff", "Yield ~ 1 + (1|Batch)", "Batch"),
  dyestuff2 = fit_case("dyestuff2", "Yield ~ 1 + (1|Batch)", "Batch"),
  penicillin = fit_case("penicillin", "diameter ~ sample + (1|plate)", "plate"),
  pastes = fit_case("pastes", "strength ~ 1 + (1|sample)", "sample"),
  pastes_batch_cask = fit_case("pastes", "strength ~ 1 + (1|batch:cask)", "batch:cask"),
  insteval = fit_case("insteval", "y ~ service + (1|d)", "d"),
  oats = fit_case("oats", "yield ~ nitro + Variety + (1|Block)", "Block"),
  machines = fit_case("machines", "score ~ Machine + (1|Worker)", "Worker"),
  orthodont = fit_case("orthodont", "distance ~ age + Sex + (1|Subject)", "Subject"),
  milk = fit_case("milk", "protein ~ Time + Diet + (1|Cow)", "Cow"),
  exam = fit_case("exam", "normexam ~ standLRT + sex + schgend + (1|school)", "school"),
  warpbreaks = fit_case("warpbreaks", "breaks ~ wool + (1|tension)", "tension")
)

out <- list(
  facts = facts,
  fits = fits,
  `_about` = list(
    script = "tests/data/r/make_datasets_reference.R",
    R = R.version.string,
    lme4 = as.character(packageVersion("lme4")),
    nlme = as.character(packageVersion("nlme")),
    mlmRev = as.character(packageVersion("mlmRev")),
    fields = paste(
      "facts: per data set and column, R's class, storage type, levels, missing count and",
      "weighted_sum = sum_i i * v_i (v: value, or level code for factors);",
      "fits: lme4 REML fits on R's own objects, the lower of the default start and a grid restart")
  )
)
## Levels are always arrays, even of length one.
for (name in names(out$facts)) for (k in seq_along(out$facts[[name]]$columns)) {
  lv <- out$facts[[name]]$columns[[k]]$levels
  if (!is.null(lv)) out$facts[[name]]$columns[[k]]$levels <- I(lv)
}
write_json(out, out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote", out_file, "\n")
