#!/usr/bin/env Rscript
## export_insteval.R -- write lme4's InstEval data set to a CSV for the several-terms benchmark.
##
## Usage:
##     Rscript benchmarks/export_insteval.R OUT.csv
##
## Columns y, service, studage, s, d, dept (73,421 rows). service is written as 0/1 (a
## numeric indicator, the same column as the factor's treatment contrast); studage, s, d
## and dept as their level labels. The data stay outside the repository
## (benchmarks/results/tmp/ is ignored by git).

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: Rscript benchmarks/export_insteval.R OUT.csv")
suppressPackageStartupMessages(library(lme4))
data("InstEval", package = "lme4")
out <- data.frame(
  y = InstEval$y,
  service = as.integer(as.character(InstEval$service)),
  studage = as.character(InstEval$studage),
  s = as.character(InstEval$s),
  d = as.character(InstEval$d),
  dept = as.character(InstEval$dept)
)
write.csv(out, args[[1]], row.names = FALSE)
