# Reference values for reml_engine's inference module (issue 4) that reference.json and
# extra_reference.json do not hold. Run from the repository root:
#
#     Rscript tests/data/r/make_inference_reference.R
#
# Writes tests/data/reference/inference_reference.json:
#   null_tails[case/REML|ML]  RLRsim RLRTSim / LRTSim null samples (nsim = 100000, seed 1)
#                             summarized as P(T > c) for the cut-offs `cuts`;
#   exact_lrt[case]           RLRsim exactLRT on the global ML fit (stat, p; seed 1);
#   profile_icc[case]         ML profile interval of the ICC from lme4's own deviance
#                             function (devFunOnly, REML = FALSE): the theta values where
#                             deviance - min = qchisq(0.95, 1), mapped to theta^2/(1+theta^2).
suppressPackageStartupMessages({
  library(lme4); library(RLRsim); library(jsonlite)
})
ref_dir <- "tests/data/reference"
cases <- read.delim(file.path(ref_dir, "cases.tsv"), stringsAsFactors = FALSE)
read_case <- function(name) {
  row <- cases[cases$name == name, ]
  d <- read.csv(file.path(ref_dir, row$file))
  d[[row$group]] <- factor(d[[row$group]])
  for (v in names(d)) if (is.character(d[[v]])) d[[v]] <- factor(d[[v]])
  list(data = d, formula = as.formula(row$formula))
}

# Global optimum: grid over theta then lmer from the best grid point (as the other scripts).
global_fit <- function(form, d, REML) {
  dev <- lmer(form, d, REML = REML, devFunOnly = TRUE)
  grid <- c(0, exp(seq(log(1e-4), log(1e3), length = 2000)))
  vals <- sapply(grid, dev)
  best <- grid[which.min(vals)]
  m_default <- lmer(form, d, REML = REML)
  m_restart <- lmer(form, d, REML = REML, start = list(theta = best))
  crit <- function(m) if (REML) REMLcrit(m) else deviance(m)
  if (crit(m_restart) < crit(m_default) - 1e-7) m_restart else m_default
}

cuts <- c(1e-10, 0.5, 1, 2, 3, 5)
null_tails <- list()
exact_lrt <- list()
profile_icc <- list()
for (name in c("seed_x", "dyestuff", "sleepstudy", "sim_unbalanced", "sim_negative_icc")) {
  cs <- read_case(name)
  m_reml <- global_fit(cs$formula, cs$data, TRUE)
  m_ml <- global_fit(cs$formula, cs$data, FALSE)
  X <- getME(m_reml, "X"); Z <- as.matrix(getME(m_reml, "Z"))
  s_reml <- RLRTSim(X, Z, qr(X), sqrt.Sigma = diag(ncol(Z)), seed = 1, nsim = 100000)
  s_ml <- LRTSim(X, Z, q = 0, sqrt.Sigma = diag(ncol(Z)), seed = 1, nsim = 100000)
  null_tails[[paste0(name, "/REML")]] <- list(cuts = cuts, tail = sapply(cuts, function(c) mean(s_reml > c)),
                                              nsim = 100000)
  null_tails[[paste0(name, "/ML")]] <- list(cuts = cuts, tail = sapply(cuts, function(c) mean(s_ml > c)),
                                            nsim = 100000)
  m0 <- lm(nobars(cs$formula), data = cs$data)
  # exactLRT cannot start from a singular fit (var_group = 0): there the statistic is 0.
  if (!isSingular(m_ml)) {
    e <- exactLRT(m_ml, m0, seed = 1, nsim = 100000)
    exact_lrt[[name]] <- list(stat = unname(e$statistic), p = unname(e$p.value), nsim = 100000,
                              deviance = deviance(m_ml))
  }
  dev <- lmer(cs$formula, cs$data, REML = FALSE, devFunOnly = TRUE)
  th <- getME(m_ml, "theta"); dmin <- deviance(m_ml)
  cut <- qchisq(0.95, 1)
  f <- function(t) dev(t) - dmin - cut
  lower <- if (f(0) <= 0) 0 else uniroot(f, c(0, th), tol = 1e-12)$root
  upper <- uniroot(f, c(th, 1e4), tol = 1e-12)$root
  profile_icc[[name]] <- list(theta = th, lower_theta = lower, upper_theta = upper,
                              lower = lower^2 / (1 + lower^2), upper = upper^2 / (1 + upper^2),
                              level = 0.95)
}

out <- list(
  `_about` = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                  RLRsim = as.character(packageVersion("RLRsim")),
                  script = "tests/data/r/make_inference_reference.R"),
  null_tails = null_tails, exact_lrt = exact_lrt, profile_icc = profile_icc)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           file.path(ref_dir, "inference_reference.json"))
