#!/usr/bin/env Rscript
## lme4_study.R -- fit lme4::lmer() with its defaults on many small data sets in one R session.
##
## Usage:
##     Rscript benchmarks/lme4_study.R MANIFEST.tsv
##
## MANIFEST.tsv has columns `id`, `file` (a CSV) and `formula`. Every data set is fitted
## twice, REML = TRUE and REML = FALSE, from lme4's default start (theta = 1), as a user
## would call it. One JSON line per fit:
##     {"id", "REML", "theta", "fixef": {...}, "criterion", "messages"}
## where criterion is REMLcrit() for REML fits and deviance() for ML fits. A fit that
## fails prints {"id", "REML", "error"}.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: Rscript benchmarks/lme4_study.R MANIFEST.tsv")
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
manifest <- read.delim(args[[1]], stringsAsFactors = FALSE)

for (i in seq_len(nrow(manifest))) {
  dat <- read.csv(manifest$file[[i]])
  dat$g <- factor(dat$g)
  for (reml in c(TRUE, FALSE)) {
    out <- tryCatch({
      msgs <- character(0)
      fit <- withCallingHandlers(
        lmer(as.formula(manifest$formula[[i]]), data = dat, REML = reml),
        message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") },
        warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") })
      list(id = manifest$id[[i]], REML = reml,
           theta = unname(getME(fit, "theta")),
           fixef = as.list(fixef(fit)),
           criterion = if (reml) REMLcrit(fit) else deviance(fit),
           messages = I(msgs))
    }, error = function(e) list(id = manifest$id[[i]], REML = reml, error = conditionMessage(e)))
    cat(toJSON(out, auto_unbox = TRUE, digits = NA), "\n", sep = "")
  }
}
