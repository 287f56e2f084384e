#!/usr/bin/env Rscript
## lme4_fit.R -- time lme4::lmer() on a CSV, for comparison with reml_engine.
##
## Usage:
##     Rscript benchmarks/lme4_fit.R DATA.csv "y ~ x + (1|g)" N_REPEATS [FACTORS]
##
## N_REPEATS timed fits after one untimed warm-up fit; 0 means a single timed fit and no
## warm-up (for fits so slow that running them twice would double the benchmark).
##
## FACTORS (optional): comma-separated columns to turn into (unordered) factors after
## reading, for columns whose labels look like numbers (InstEval's studage); grouping
## columns need not be listed, lmer() makes factors of them itself.
##
## Prints one JSON line:
##     {"file", "formula", "n_obs", "repeats", "median_seconds",
##      "timings_seconds": [...], "reml_criterion", "theta", "fixef": {...},
##      "se": {...}, "variances": {term: variance, ..., "Residual": sigma2},
##      "peak_extra_mb", "lme4_version", "R_version"}
##
## Only the lmer() call is timed (elapsed wall-clock time); reading the CSV,
## loading packages and formatting output are excluded so the numbers are
## comparable to timing the engine's fit call alone.  lme4's default start
## is used, as a user would call it: this measures speed, not the global
## optimum (tests/data/r/make_extra_reference.R handles that).

args <- commandArgs(trailingOnly = TRUE)
if (!(length(args) %in% c(3, 4)))
  stop("usage: Rscript benchmarks/lme4_fit.R DATA.csv FORMULA N_REPEATS [FACTORS]")
csv_path <- args[[1]]
form <- as.formula(args[[2]])
n_rep <- as.integer(args[[3]])
if (is.na(n_rep) || n_rep < 0) stop("N_REPEATS must be a non-negative integer")
## N_REPEATS = 0: one timed fit without the warm-up, for fits too slow to run twice.
warm_up <- n_rep > 0
n_rep <- max(n_rep, 1L)

suppressPackageStartupMessages(library(lme4))

dat <- if (requireNamespace("data.table", quietly = TRUE)) {
  as.data.frame(data.table::fread(csv_path))
} else {
  read.csv(csv_path)
}
factors <- if (length(args) == 4) strsplit(args[[4]], ",", fixed = TRUE)[[1]] else character(0)
for (column in factors[nzchar(factors)]) dat[[column]] <- factor(as.character(dat[[column]]))

## One untimed warm-up fit: the first call pays for lazy loading and method
## dispatch caches, which would otherwise inflate the first timing.
if (warm_up) fit <- suppressMessages(lmer(form, data = dat, REML = TRUE))

## Peak resident memory of the timed fits above what R held before them (Linux: the
## high-water mark is reset through /proc/self/clear_refs; NA elsewhere).
status_mb <- function(key) {
  if (!file.exists("/proc/self/status")) return(NA_real_)
  line <- grep(paste0("^", key), readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}
invisible(gc())
reset_ok <- tryCatch({ writeLines("5", "/proc/self/clear_refs"); TRUE },
                     error = function(e) FALSE, warning = function(w) FALSE)
rss_before <- if (reset_ok) status_mb("VmRSS:") else NA_real_

timings <- numeric(n_rep)
for (i in seq_len(n_rep)) {
  t0 <- proc.time()[["elapsed"]]
  fit <- suppressMessages(lmer(form, data = dat, REML = TRUE))
  timings[i] <- proc.time()[["elapsed"]] - t0
}
## proc.time() ticks in milliseconds; rounding drops subtraction noise such
## as 0.0109999999999999.
timings <- round(timings, 6)
peak_extra_mb <- if (reset_ok) max(status_mb("VmHWM:") - rss_before, 0) else NA_real_

result <- list(
  file = csv_path,
  formula = deparse1(form),
  n_obs = nobs(fit),
  repeats = n_rep,
  median_seconds = median(timings),
  timings_seconds = I(timings),   # I(): stays an array even when N = 1
  reml_criterion = REMLcrit(fit),
  theta = unname(getME(fit, "theta")),
  fixef = as.list(fixef(fit)),
  se = as.list(sqrt(diag(as.matrix(vcov(fit))))),
  variances = local({
    vc <- as.data.frame(VarCorr(fit))
    setNames(as.list(vc$vcov), vc$grp)
  }),
  peak_extra_mb = peak_extra_mb,
  lme4_version = as.character(packageVersion("lme4")),
  R_version = R.version.string
)

if (requireNamespace("jsonlite", quietly = TRUE)) {
  cat(jsonlite::toJSON(result, auto_unbox = TRUE, digits = NA), "\n", sep = "")
} else {
  ## Minimal hand-written JSON for the few value types used above.
  num <- function(x) sprintf("%.17g", x)
  str <- function(x) paste0('"', gsub('(["\\\\])', "\\\\\\1", x), '"')
  arr <- function(x) paste0("[", paste(num(x), collapse = ","), "]")
  obj <- function(x) paste0("{", paste(str(names(x)), num(unlist(x)),
                                       sep = ":", collapse = ","), "}")
  fields <- c(
    file = str(result$file), formula = str(result$formula),
    n_obs = num(result$n_obs), repeats = num(result$repeats),
    median_seconds = num(result$median_seconds),
    timings_seconds = arr(result$timings_seconds),
    reml_criterion = num(result$reml_criterion),
    theta = if (length(result$theta) == 1) num(result$theta) else arr(result$theta),
    fixef = obj(result$fixef), se = obj(result$se), variances = obj(result$variances),
    peak_extra_mb = num(result$peak_extra_mb),
    lme4_version = str(result$lme4_version), R_version = str(result$R_version))
  cat("{", paste(str(names(fields)), fields, sep = ":", collapse = ","), "}\n", sep = "")
}
