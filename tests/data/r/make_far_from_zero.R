#!/usr/bin/env Rscript
## make_far_from_zero.R
##
## Writes tests/data/far_from_zero.csv and tests/data/far_from_zero.json: a
## predictor far from 0 (x ~ N(1e6, 1), like epoch seconds) inside an
## interaction and a square, and lme4's fits of the same models on the exactly
## centred predictor xc = x - 1e6 (subtracting 1e6 from a double within a
## factor 2 of it is exact, so the two designs span the same space and have the
## same REML criterion; only the coefficients map). lme4's fits of the raw
## models are written too, for comparison only.
##
## Run from the repository root:
##     Rscript tests/data/r/make_far_from_zero.R

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

set.seed(20240610)
n <- 400
G <- 40
g <- sample(seq_len(G), n, replace = TRUE)
f <- sample(c("a", "b", "c"), n, replace = TRUE)
x <- rnorm(n, 1e6, 1)
b <- rnorm(G)
xc0 <- x - 1e6
y <- 2 + 0.5 * xc0 + (f == "b") * 1.0 + (f == "c") * 0.7 * xc0 + 0.3 * xc0^2 + b[g] + rnorm(n)
d <- data.frame(y = y, x = x, f = f, g = g)
write.csv(data.frame(y = sprintf("%.17g", y), x = sprintf("%.17g", x), f = f, g = g),
          file.path("tests", "data", "far_from_zero.csv"), row.names = FALSE, quote = FALSE)
d <- read.csv(file.path("tests", "data", "far_from_zero.csv"), stringsAsFactors = FALSE)
d$f <- factor(d$f)
d$g <- factor(d$g)
d$xc <- d$x - 1e6
stopifnot(all(d$xc + 1e6 == d$x))

## Every fit is also restarted from the best point of a theta grid, and the lower
## criterion kept (these models have a single optimum; the restart only guards).
THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e3), length.out = 2000)))
fit_global <- function(formula, REML) {
  m <- lmer(formula, data = d, REML = REML)
  dev <- lmer(formula, data = d, REML = REML, devFunOnly = TRUE)
  crit <- vapply(THETA_GRID, dev, numeric(1))
  best <- THETA_GRID[which.min(crit)]
  m2 <- lmer(formula, data = d, REML = REML, start = list(theta = best))
  crit_of <- function(m) if (REML) REMLcrit(m) else deviance(m)
  if (crit_of(m2) < crit_of(m) - 1e-7) m <- m2
  list(
    formula = deparse(formula),
    REML = REML,
    criterion = crit_of(m),
    theta = unname(getME(m, "theta")),
    sigma = sigma(m),
    columns = colnames(getME(m, "X")),
    fixef = unname(fixef(m)),
    se = unname(sqrt(diag(as.matrix(vcov(m)))))
  )
}

out <- list()
for (REML in c(TRUE, FALSE)) {
  key <- if (REML) "reml" else "ml"
  out[[paste0("interaction_centred_", key)]] <- fit_global(y ~ xc * f + (1 | g), REML)
  out[[paste0("square_centred_", key)]] <- fit_global(y ~ xc + I(xc^2) + (1 | g), REML)
  out[[paste0("interaction_raw_", key)]] <- tryCatch(
    suppressWarnings(fit_global(y ~ x * f + (1 | g), REML)), error = function(e) conditionMessage(e))
}
out[["_about"]] <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  shift = 1e6
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path("tests", "data", "far_from_zero.json"))
