#!/usr/bin/env Rscript
## make_datasets.R
##
## Exports the R data sets behind reml_engine.datasets as package data:
## reml_engine/datasets/data/NAME.csv (NAME.csv.gz above GZIP_ABOVE_BYTES) and
## reml_engine/datasets/data/datasets.json, which records for every data set
## its source (R object and package), its size and, per column, R's storage
## type and, for factors, the levels in R's order and whether it is ordered.
##
## Run from the repository root:
##     Rscript reml_engine/datasets/make_datasets.R
##
## The CSV holds the values as R has them: factors as their labels, numbers
## with 15 significant digits (17 where 15 would not read back as the same
## double), missing values as empty fields. The gzip files carry no time stamp
## or file name, so running the script again gives the same bytes.
##
## The tests compare what reml_engine.datasets reads with facts R writes from
## its own objects (tests/data/r/make_datasets_reference.R), not with this file.

suppressPackageStartupMessages({
  library(jsonlite)
})

out_dir <- file.path("reml_engine", "datasets", "data")
if (!dir.exists(out_dir)) stop("run this script from the repository root")

## Files larger than this are stored gzip-compressed: the wheel stays small.
GZIP_ABOVE_BYTES <- 64 * 1024

## name in reml_engine -> R object and the package it comes from.
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
  ## groupedData (nlme) and other classes away: the columns as they are.
  d <- env[[object]]
  d <- as.data.frame(d)
  attributes(d)[setdiff(names(attributes(d)), c("names", "row.names", "class"))] <- NULL
  class(d) <- "data.frame"
  d
}

column_type <- function(v) {
  if (is.ordered(v)) return("ordered")
  if (is.factor(v)) return("factor")
  if (is.logical(v)) return("logical")
  if (is.integer(v)) return("integer")
  if (is.double(v)) return("double")
  stop("unexpected column type: ", paste(class(v), collapse = "/"))
}

as_text <- function(v) {
  if (is.factor(v)) {
    out <- as.character(v)
  } else if (is.double(v)) {
    out <- sprintf("%.15g", v)
    inexact <- !is.na(v) & as.numeric(out) != v
    out[inexact] <- sprintf("%.17g", v[inexact])
  } else if (is.logical(v)) {
    out <- ifelse(v, "True", "False")
  } else {
    out <- as.character(v)
  }
  out[is.na(v)] <- ""
  out
}

## A field needs quotes only when it holds the separator, a quote or a newline.
csv_field <- function(text) {
  needs <- grepl("[\",\n]", text)
  text[needs] <- paste0("\"", gsub("\"", "\"\"", text[needs]), "\"")
  text
}

csv_lines <- function(d) {
  fields <- lapply(d, function(v) csv_field(as_text(v)))
  c(paste(csv_field(names(d)), collapse = ","), do.call(paste, c(fields, sep = ",")))
}

meta <- list()
for (name in names(SOURCES)) {
  object <- SOURCES[[name]][1]
  package <- SOURCES[[name]][2]
  d <- load_r(object, package)
  lines <- csv_lines(d)
  size <- sum(nchar(lines, type = "bytes") + 1)
  file <- paste0(name, ".csv")
  if (size > GZIP_ABOVE_BYTES) {
    file <- paste0(file, ".gz")
    con <- gzfile(file.path(out_dir, file), "wb", compression = 9)
    writeLines(lines, con)
    close(con)
  } else {
    writeLines(lines, file.path(out_dir, file))
  }
  columns <- lapply(names(d), function(k) {
    v <- d[[k]]
    col <- list(name = k, type = column_type(v))
    if (is.factor(v)) col$levels <- levels(v)
    col
  })
  meta[[name]] <- list(
    object = object,
    package = package,
    package_version = as.character(packageVersion(package)),
    file = file,
    nrow = nrow(d),
    columns = columns
  )
  cat(sprintf("%-11s %6d rows  %s (%d bytes of CSV)\n", name, nrow(d), file, size))
}

meta$`_about` <- list(
  script = "reml_engine/datasets/make_datasets.R",
  R = R.version.string
)
write_json(meta, file.path(out_dir, "datasets.json"), auto_unbox = TRUE, pretty = TRUE)
cat("wrote", file.path(out_dir, "datasets.json"), "\n")
