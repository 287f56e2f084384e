#!/usr/bin/env Rscript
## lme4_fit.R -- time lme4::lmer() on a CSV, for comparison with reml_engine.
##
## Usage:
##     Rscript benchmarks/lme4_fit.R DATA.csv "y ~ x + (1|g)" N_REPEATS [FACTORS]
##     Rscript benchmarks/lme4_fit.R --serve
##
## N_REPEATS timed fits after one untimed warm-up fit; 0 means a single timed fit and no
## warm-up (for fits so slow that running them twice would double the benchmark).
##
## FACTORS (optional): comma-separated columns to turn into (unordered) factors after
## reading, for columns whose labels look like numbers (InstEval's studage); grouping
## columns need not be listed, lmer() makes factors of them itself.
##
## --serve: one R session for many fits (benchmarks/engines.py keeps one open for a whole
## run, so that R and lme4 load once, not once per data set). Each line read from stdin
## is one job, "DATA.csv<TAB>FORMULA<TAB>N_REPEATS<TAB>FACTORS"; each job prints one line.
##
## Prints one JSON line per fit:
##     {"file", "formula", "n_obs", "repeats", "median_seconds",
##      "timings_seconds": [...], "reml_criterion", "theta", "fixef": {...},
##      "se": {...}, "variances": {term: variance, ..., "Residual": sigma2},
##      "peak_extra_mb", "lme4_version", "R_version"}
## or {"error": message} when the fit fails (in --serve mode; otherwise R stops).
##
## Only the lmer() call is timed (elapsed wall-clock time); reading the CSV,
## loading packages and formatting output are excluded so the numbers are
## comparable to timing the engine's fit call alone.  lme4's default start
## is used, as a user would call it: this measures speed, not the global
## optimum (tests/data/r/make_extra_reference.R handles that).

suppressPackageStartupMessages(library(lme4))

## Peak resident memory of the timed fits above what R held before them (Linux: the
## high-water mark is reset through /proc/self/clear_refs; NA elsewhere).
status_mb <- function(key) {
  if (!file.exists("/proc/self/status")) return(NA_real_)
  line <- grep(paste0("^", key), readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}

fit_one <- function(csv_path, formula_text, n_rep, factors_text) {
  form <- as.formula(formula_text)
  n_rep <- as.integer(n_rep)
  if (is.na(n_rep) || n_rep < 0) stop("N_REPEATS must be a non-negative integer")
  warm_up <- n_rep > 0
  n_rep <- max(n_rep, 1L)
  dat <- if (requireNamespace("data.table", quietly = TRUE)) {
    as.data.frame(data.table::fread(csv_path))
  } else {
    read.csv(csv_path)
  }
  factors <- strsplit(factors_text, ",", fixed = TRUE)[[1]]
  for (column in factors[nzchar(factors)]) dat[[column]] <- factor(as.character(dat[[column]]))

  ## One untimed warm-up fit: the first call pays for lazy loading and method
  ## dispatch caches, which would otherwise inflate the first timing.
  if (warm_up) fit <- suppressMessages(lmer(form, data = dat, REML = TRUE))

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

  list(
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
}

json_str <- function(x) paste0('"', gsub('(["\\\\])', "\\\\\\1", gsub("[\r\n\t]", " ", x)), '"')

to_json <- function(result) {
  if (requireNamespace("jsonlite", quietly = TRUE))
    return(as.character(jsonlite::toJSON(result, auto_unbox = TRUE, digits = NA)))
  ## Minimal hand-written JSON for the few value types used above.
  num <- function(x) sprintf("%.17g", x)
  arr <- function(x) paste0("[", paste(num(x), collapse = ","), "]")
  obj <- function(x) paste0("{", paste(json_str(names(x)), num(unlist(x)),
                                       sep = ":", collapse = ","), "}")
  fields <- c(
    file = json_str(result$file), formula = json_str(result$formula),
    n_obs = num(result$n_obs), repeats = num(result$repeats),
    median_seconds = num(result$median_seconds),
    timings_seconds = arr(result$timings_seconds),
    reml_criterion = num(result$reml_criterion),
    theta = if (length(result$theta) == 1) num(result$theta) else arr(result$theta),
    fixef = obj(result$fixef), se = obj(result$se), variances = obj(result$variances),
    peak_extra_mb = num(result$peak_extra_mb),
    lme4_version = json_str(result$lme4_version), R_version = json_str(result$R_version))
  paste0("{", paste(json_str(names(fields)), fields, sep = ":", collapse = ","), "}")
}

args <- commandArgs(trailingOnly = TRUE)
if (length(args) == 1 && args[[1]] == "--serve") {
  input <- file("stdin")
  open(input)
  while (length(line <- readLines(input, n = 1)) > 0) {
    job <- strsplit(line, "\t", fixed = TRUE)[[1]]
    out <- tryCatch(
      to_json(fit_one(job[[1]], job[[2]], job[[3]], if (length(job) > 3) job[[4]] else "")),
      error = function(e) paste0("{", json_str("error"), ":", json_str(conditionMessage(e)), "}"))
    cat(out, "\n", sep = "")
    flush(stdout())
  }
} else {
  if (!(length(args) %in% c(3, 4)))
    stop("usage: Rscript benchmarks/lme4_fit.R DATA.csv FORMULA N_REPEATS [FACTORS] | --serve")
  cat(to_json(fit_one(args[[1]], args[[2]], args[[3]], if (length(args) == 4) args[[4]] else "")),
      "\n", sep = "")
}
