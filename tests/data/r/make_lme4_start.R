#!/usr/bin/env Rscript
## make_lme4_start.R
##
## Where does lmer() with its default settings stop when the profiled criterion
## has more than one local minimum? Writes tests/data/lme4_start.json (and
## tests/data/cigar.csv, the columns of plm's Cigar data that the model uses):
##
## * "cigar": plm's Cigar, price ~ pop + (1|state), REML and ML;
## * "cases": the reference cases of tests/data/reference/cases.tsv;
## * "simulated": data sets whose REML or ML criterion has two local minima in
##   theta (found on a grid), generated below, stored compactly (the values are
##   rounded to 4 decimals before fitting, so the stored text is exactly the
##   data that were fitted);
## * "start_decides": data sets of the same family, screened so that lmer stops
##   in another basin than a descent from theta0 reaches (one criterion each).
##
## For every fit: lmer's theta and criterion with the default start and
## optimizer (lme4 >= 1.1-8 starts a model whose random terms are all (1|f) at
## theta0 = sqrt(v / (var(y) - v)), v = var(ave(y, f)); the default optimizer is
## nloptwrap, NLopt's BOBYQA), theta0 itself, and the global minimum (the best
## of the default fit and a restart from the best point of a theta grid). For
## cigar, the cases and start_decides also lmer's own evaluations (theta and
## criterion as nloptr prints them with verbose = 3, to 6 decimals).
##
## Run from the repository root:
##     Rscript tests/data/r/make_lme4_start.R

suppressPackageStartupMessages({
  library(lme4)
  library(plm)
  library(jsonlite)
})

THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e4), length.out = 3000)))

theta_start <- function(y, f) {
  v <- var(ave(y, f))
  ve <- var(y) - v
  if (!is.na(ve) && ve > 0) sqrt(v / ve) else 1
}

crit_of <- function(m) if (isREML(m)) REMLcrit(m) else deviance(m)

grid_minima <- function(crit) {
  k <- length(crit)
  i <- which(crit[2:(k - 1)] < crit[1:(k - 2)] & crit[2:(k - 1)] <= crit[3:k]) + 1
  if (crit[2] > crit[1]) i <- c(1, i)
  i
}

## lmer's own evaluations, as nloptr prints them with verbose = 3 (6 decimals).
traced_lmer <- function(formula, data, REML) {
  text <- capture.output(m <- suppressMessages(suppressWarnings(
    lmer(formula, data = data, REML = REML, verbose = 3))))
  value_of <- function(pattern) as.numeric(sub(pattern, "", grep(pattern, text, value = TRUE)))
  list(model = m, x = value_of("^\\s*x = "), f = value_of("^\\s*f\\(x\\) = "))
}

fit_record <- function(formula, data, REML, trace = FALSE) {
  traced <- traced_lmer(formula, data, REML)
  m <- traced$model
  dev <- lmer(formula, data = data, REML = REML, devFunOnly = TRUE)
  crit <- vapply(THETA_GRID, dev, numeric(1))
  best <- THETA_GRID[which.min(crit)]
  m2 <- suppressMessages(suppressWarnings(lmer(formula, data = data, REML = REML,
                                               start = list(theta = best))))
  global <- if (crit_of(m2) < crit_of(m)) m2 else m
  y <- model.response(model.frame(m))
  f <- getME(m, "flist")[[1]]
  list(
    REML = REML,
    theta0 = theta_start(y, f),
    theta = unname(getME(m, "theta")),
    criterion = crit_of(m),
    global_theta = unname(getME(global, "theta")),
    global_criterion = crit_of(global),
    grid_minima_theta = THETA_GRID[grid_minima(crit)],
    trace_theta = if (trace) traced$x else NULL,
    trace_criterion = if (trace) traced$f else NULL
  )
}

both <- function(formula, data, trace = FALSE) {
  list(reml = fit_record(formula, data, TRUE, trace), ml = fit_record(formula, data, FALSE, trace))
}

out <- list()

## plm's Cigar ------------------------------------------------------------------
data("Cigar", package = "plm")
cigar <- data.frame(price = Cigar$price, pop = Cigar$pop, state = Cigar$state)
write.csv(cigar, file.path("tests", "data", "cigar.csv"), row.names = FALSE)
cigar <- read.csv(file.path("tests", "data", "cigar.csv"))
cigar$state <- factor(cigar$state)
out$cigar <- c(list(formula = "price ~ pop + (1|state)"), both(price ~ pop + (1 | state), cigar, trace = TRUE))

## the reference cases -----------------------------------------------------------
ref_dir <- file.path("tests", "data", "reference")
cases <- read.delim(file.path(ref_dir, "cases.tsv"), stringsAsFactors = FALSE)
out$cases <- list()
for (i in seq_len(nrow(cases))) {
  d <- read.csv(file.path(ref_dir, cases$file[i]), stringsAsFactors = FALSE)
  d[[cases$group[i]]] <- factor(as.character(d[[cases$group[i]]]))
  out$cases[[cases$name[i]]] <- c(list(formula = cases$formula[i]), both(as.formula(cases$formula[i]), d, trace = TRUE))
}

## simulated data sets with two optima -------------------------------------------
## As the seed data: group means of x far apart, y centred within groups up to a
## group-level jitter, so the between-group slope is near zero and the
## within-group one is not; the scale of y and of the jitter vary, so that theta0
## falls on either side of the barrier between the minima.
simulate_one <- function() {
  G <- sample(4:12, 1)
  sizes <- sample(2:7, G, replace = TRUE)
  g <- rep(seq_len(G), sizes)
  x_between <- rnorm(G, 0, runif(1, 2, 15))
  x_within <- rnorm(length(g))
  y <- runif(1, 0.1, 1) * x_within + rnorm(length(g), 0, runif(1, 0.1, 0.6))
  y <- y - ave(y, g)
  y <- y + rnorm(G, 0, runif(1, 0.01, 0.4))[g] + runif(1, -1, 1) * x_between[g] * runif(1, 0, 0.05)
  data.frame(y = round(y * runif(1, 0.5, 20), 4), x = round(x_between[g] + x_within, 4),
             g = sprintf("s%02d", g))
}

set.seed(20240611)
N_SETS <- 300
out$simulated <- list()
tries <- 0
while (length(out$simulated) < N_SETS && tries < 20000) {
  tries <- tries + 1
  d <- simulate_one()
  d$g <- factor(d$g)
  rec <- tryCatch(both(y ~ x + (1 | g), d), error = function(e) NULL)
  if (is.null(rec)) next
  if (length(rec$reml$grid_minima_theta) < 2 && length(rec$ml$grid_minima_theta) < 2) next
  out$simulated[[length(out$simulated) + 1]] <- c(
    list(y = d$y, x = d$x, g = as.character(d$g)), rec)
}

## data sets where the start decides: lmer does not stop in the basin that a descent
## from theta0 reaches (on a coarse grid), i.e. BOBYQA's first steps cross the barrier
## between the minima. Screened from many draws of the same family.
descent_basin <- function(grid, crit, start) {
  i <- which.min(abs(grid - start))
  repeat {
    left <- if (i > 1) crit[i - 1] else Inf
    right <- if (i < length(crit)) crit[i + 1] else Inf
    if (left < crit[i] && left <= right) i <- i - 1
    else if (right < crit[i]) i <- i + 1
    else break
  }
  grid[i]
}
SCREEN_GRID <- c(0, exp(seq(log(1e-4), log(1e4), length.out = 400)))
N_HARD <- 60
out$start_decides <- list()
screened <- 0
while (length(out$start_decides) < N_HARD && screened < 200000) {
  screened <- screened + 1
  d <- simulate_one()
  d$g <- factor(d$g)
  REML <- screened %% 2 == 0
  m <- tryCatch(suppressMessages(suppressWarnings(lmer(y ~ x + (1 | g), data = d, REML = REML))),
                error = function(e) NULL)
  if (is.null(m)) next
  dev <- lmer(y ~ x + (1 | g), data = d, REML = REML, devFunOnly = TRUE)
  crit <- vapply(SCREEN_GRID, dev, numeric(1))
  if (length(grid_minima(crit)) < 2) next
  reached <- descent_basin(SCREEN_GRID, crit, theta_start(d$y, d$g))
  theta <- unname(getME(m, "theta"))
  ## lmer's end is in another basin when the grid descent from it differs.
  if (descent_basin(SCREEN_GRID, crit, theta) == reached) next
  rec <- fit_record(y ~ x + (1 | g), d, REML, trace = TRUE)
  out$start_decides[[length(out$start_decides) + 1]] <- c(
    list(y = d$y, x = d$x, g = as.character(d$g), criterion_name = if (REML) "reml" else "ml"), rec)
}

out[["_about"]] <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  nloptr = as.character(packageVersion("nloptr")),
  plm = as.character(packageVersion("plm")),
  tries = tries,
  screened = screened,
  theta_grid = "c(0, exp(seq(log(1e-4), log(1e4), length.out = 3000)))"
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA),
           file.path("tests", "data", "lme4_start.json"))
