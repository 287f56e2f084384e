#!/usr/bin/env Rscript
## make_multi_lme4_default.R
##
## Writes tests/data/multi/lme4_default.json: simulated designs with several
## random-intercept terms (crossed, nested, three terms, prior weights and an
## offset), each with
##   - what lmer() returns from its default start (theta = 1 for every term,
##     nloptwrap BOBYQA), REML and ML: `default` = {theta, criterion};
##   - `start_theta`: the theta lmer() starts from (its devfun's theta before any
##     optimization: for random intercepts lme4 starts at sqrt(var(ave(y, f)) / v_e),
##     not at 1);
##   - the global optimum: a grid over every theta of lme4's own deviance
##     function (devFunOnly = TRUE), then lmer() restarted from the GRID_RESTARTS
##     best grid points; the lowest fit is `global` = {theta, criterion}.
## The data are written in the file (columns of `data`), so the tests need no R.
##
## Run from the repository root:
##     Rscript tests/data/r/make_multi_lme4_default.R
##
## theta and criterion are in lme4's term order (`terms`, the names of
## getME(m, "theta") without ".(Intercept)"). "criterion" is REMLcrit() for REML
## and deviance() for ML. Takes about a minute; same file on every run.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

out_file <- file.path("tests", "data", "multi", "lme4_default.json")
if (!dir.exists(dirname(out_file)))
  stop("run this script from the repository root (tests/data/multi not found)")

GRID_2 <- c(0, exp(seq(log(1e-3), log(3e3), length.out = 80)))
GRID_3 <- c(0, exp(seq(log(1e-3), log(3e3), length.out = 24)))
GRID_RESTARTS <- 6

## Contextual design: subjects with very different mean x, the response follows x
## only within subject (slope 0.5), small residual noise; items crossed.
seedlike_crossed <- function(seed, n_subj = 5, n_item = 3, reps = 3, noise = 0.2, item_sd = 0.25) {
  set.seed(seed)
  d <- expand.grid(rep = seq_len(reps), subj = seq_len(n_subj), item = seq_len(n_item))
  centre <- rnorm(n_subj, sd = 8)
  item_eff <- rnorm(n_item, sd = item_sd)
  d$x <- centre[d$subj] + rnorm(nrow(d))
  d$y <- 0.5 * (d$x - centre[d$subj]) + item_eff[d$item] + rnorm(nrow(d), sd = noise)
  d$subj <- paste0("s", d$subj)
  d$item <- paste0("i", d$item)
  d[, c("subj", "item", "x", "y")]
}

## The same contextual structure, nested: classes within schools.
seedlike_nested <- function(seed, n_school = 5, n_class = 3, reps = 3, noise = 0.3) {
  set.seed(seed)
  d <- expand.grid(rep = seq_len(reps), class = seq_len(n_class), school = seq_len(n_school))
  centre <- rnorm(n_school, sd = 8)
  class_eff <- rnorm(n_school * n_class, sd = 0.3)
  cls <- (d$school - 1) * n_class + d$class
  d$x <- centre[d$school] + rnorm(nrow(d))
  d$y <- 0.5 * (d$x - centre[d$school]) + class_eff[cls] + rnorm(nrow(d), sd = noise)
  d$school <- paste0("s", d$school)
  d$class <- paste0("c", d$class)
  d[, c("school", "class", "x", "y")]
}

## An ordinary crossed design, some cells missing, one variance possibly 0.
ordinary_crossed <- function(seed, n_subj = 10, n_item = 6, sd_subj = 1, sd_item = 0.5) {
  set.seed(seed)
  d <- expand.grid(subj = seq_len(n_subj), item = seq_len(n_item), rep = 1:2)
  d <- d[runif(nrow(d)) < 0.8, ]
  d$x <- rnorm(nrow(d))
  d$y <- 1 + 0.3 * d$x + rnorm(n_subj, sd = sd_subj)[d$subj] + rnorm(n_item, sd = sd_item)[d$item] +
    rnorm(nrow(d))
  d$subj <- paste0("s", d$subj)
  d$item <- paste0("i", d$item)
  d[, c("subj", "item", "x", "y")]
}

## Three crossed terms.
three_terms <- function(seed, sds = c(1, 0.5, 0.8)) {
  set.seed(seed)
  d <- expand.grid(a = 1:6, b = 1:4, c = 1:3)
  d$x <- rnorm(nrow(d)) + rnorm(6, sd = 2)[d$a]
  d$y <- 0.4 * d$x + rnorm(6, sd = sds[1])[d$a] + rnorm(4, sd = sds[2])[d$b] +
    rnorm(3, sd = sds[3])[d$c] + rnorm(nrow(d))
  d$a <- paste0("a", d$a)
  d$b <- paste0("b", d$b)
  d$c <- paste0("c", d$c)
  d[, c("a", "b", "c", "x", "y")]
}

## Crossed with prior weights (residual variance sigma2 / w) and an offset.
weighted_crossed <- function(seed) {
  d <- ordinary_crossed(seed, n_subj = 8, n_item = 5)
  set.seed(seed + 1000)
  d$w <- runif(nrow(d), 0.5, 2)
  d$z <- rnorm(nrow(d))
  d$y <- d$y + 0.7 * d$z + rnorm(nrow(d), sd = 0.3) / sqrt(d$w)
  d
}

cases <- list()
for (s in 1:8) cases[[sprintf("seedlike_crossed_%d", s)]] <-
  list(data = seedlike_crossed(s), formula = "y ~ x + (1 | subj) + (1 | item)")
for (s in 1:3) cases[[sprintf("seedlike_crossed_noisy_%d", s)]] <-
  list(data = seedlike_crossed(100 + s, noise = 0.6, item_sd = 0.5), formula = "y ~ x + (1 | subj) + (1 | item)")
for (s in 1:4) cases[[sprintf("seedlike_nested_%d", s)]] <-
  list(data = seedlike_nested(200 + s), formula = "y ~ x + (1 | school/class)")
for (s in 1:3) cases[[sprintf("ordinary_crossed_%d", s)]] <-
  list(data = ordinary_crossed(300 + s, sd_item = c(0.5, 0, 0.1)[s]), formula = "y ~ x + (1 | subj) + (1 | item)")
for (s in 1:2) cases[[sprintf("three_terms_%d", s)]] <-
  list(data = three_terms(400 + s, sds = list(c(1, 0.5, 0.8), c(0.8, 0, 0.3))[[s]]),
       formula = "y ~ x + (1 | a) + (1 | b) + (1 | c)")
cases[["weighted_offset_crossed"]] <-
  list(data = weighted_crossed(500), formula = "y ~ x + offset(z) + (1 | subj) + (1 | item)", weights = "w")

fit_one <- function(case, REML) {
  d <- case$data
  for (col in names(d)) if (is.character(d[[col]])) d[[col]] <- factor(d[[col]])
  f <- as.formula(case$formula)
  w <- if (is.null(case$weights)) NULL else d[[case$weights]]
  ctrl <- lmerControl(check.conv.singular = "ignore", calc.derivs = FALSE)
  fit <- function(start = NULL) {
    if (is.null(w)) lmer(f, data = d, REML = REML, start = start, control = ctrl)
    else lmer(f, data = d, REML = REML, weights = w, start = start, control = ctrl)
  }
  crit <- function(m) if (REML) REMLcrit(m) else deviance(m)
  default <- fit()
  devfun <- if (is.null(w)) lmer(f, data = d, REML = REML, devFunOnly = TRUE)
            else lmer(f, data = d, REML = REML, weights = w, devFunOnly = TRUE)
  ## Read before the grid: every call of devfun sets pp$theta in place.
  start_theta <- unname(environment(devfun)$pp$theta) + 0  # a copy: pp$theta is shared with the C++ object
  k <- length(getME(default, "theta"))
  grid <- expand.grid(rep(list(if (k == 2) GRID_2 else GRID_3), k))
  values <- apply(grid, 1, function(th) devfun(as.numeric(th)))
  best <- order(values)[seq_len(GRID_RESTARTS)]
  fits <- lapply(best, function(i) fit(start = list(theta = as.numeric(grid[i, ]))))
  global <- fits[[which.min(vapply(fits, crit, 0))]]
  if (crit(default) <= crit(global)) global <- default
  one <- function(m) list(theta = unname(getME(m, "theta")), criterion = crit(m))
  list(default = one(default), global = one(global),
       start_theta = start_theta,
       grid_best = list(theta = as.numeric(grid[best[1], ]), criterion = values[best[1]]))
}

out <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  m <- suppressMessages(fit_one(case, TRUE))
  ml <- suppressMessages(fit_one(case, FALSE))
  probe <- lmer(as.formula(case$formula), data = case$data, control = lmerControl(calc.derivs = FALSE))
  out[[name]] <- list(
    formula = case$formula,
    weights = if (is.null(case$weights)) NULL else case$weights,
    terms = sub("\\.\\(Intercept\\)$", "", names(getME(probe, "theta"))),
    data = case$data,
    reml = m,
    ml = ml
  )
  cat(sprintf("%-28s REML default %.4f global %.4f | ML default %.4f global %.4f\n", name,
              m$default$criterion, m$global$criterion, ml$default$criterion, ml$global$criterion))
}
out[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                        jsonlite = as.character(packageVersion("jsonlite")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, dataframe = "columns", null = "null"), out_file)
