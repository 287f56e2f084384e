#!/usr/bin/env Rscript
## make_dialect_reference.R
##
## Reference values for reml_engine's R formula dialect (dialect = "R"), its
## contrasts= argument and type III tables under any coding, written to
## tests/data/reference/dialect_reference.json, plus Loblolly (R's datasets)
## as tests/data/reference/loblolly.csv.
##
## Run from the repository root:
##     Rscript tests/data/r/make_dialect_reference.R
##
## The data are R's own objects (lme4's sleepstudy and InstEval, nlme's
## Orthodont and Oats) as data frames, with their factors as R has them
## (ordered where R's are: Oats' Block, InstEval's studage and lectage), the
## same data reml_engine.datasets ships. Loblolly is written to CSV and read
## back with read.csv, so age is an integer column there as in pandas: the case
## where formulaic reads I(age^2) as a bitwise XOR.
##
## Every fit is done twice, from lme4's default start and from the best point
## of a dense theta grid, and the lower criterion is kept (as the other
## scripts here do). Type III tables are lmerTest's anova(m, type = 3) of the
## kept fit, Satterthwaite and Kenward-Roger.

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})

ref_dir <- file.path("tests", "data", "reference")
out_file <- file.path(ref_dir, "dialect_reference.json")
if (!dir.exists(ref_dir)) stop("run this script from the repository root")

load_r <- function(object, package) {
  env <- new.env()
  data(list = object, package = package, envir = env)
  d <- as.data.frame(env[[object]])
  attributes(d)[setdiff(names(attributes(d)), c("names", "row.names", "class"))] <- NULL
  class(d) <- "data.frame"
  d
}

lob <- load_r("Loblolly", "datasets")
lob$Seed <- as.character(lob$Seed)
write.csv(lob[, c("height", "age", "Seed")], file.path(ref_dir, "loblolly.csv"), row.names = FALSE)
DATA <- list(
  loblolly = read.csv(file.path(ref_dir, "loblolly.csv")),
  sleepstudy = load_r("sleepstudy", "lme4"),
  orthodont = load_r("Orthodont", "nlme"),
  oats = load_r("Oats", "nlme"),
  insteval = load_r("InstEval", "lme4")
)
stopifnot(is.integer(DATA$loblolly$age), is.ordered(DATA$oats$Block), is.ordered(DATA$insteval$studage))

THETA_GRID <- c(0, exp(seq(log(1e-4), log(1e3), length.out = 2000)))
CRIT_TOL <- 1e-7

rows_of <- function(tab) {
  lapply(seq_len(nrow(tab)), function(i) list(
    term = rownames(tab)[i], sum_sq = tab[i, "Sum Sq"], mean_sq = tab[i, "Mean Sq"],
    num_df = tab[i, "NumDF"], den_df = tab[i, "DenDF"], f_value = tab[i, "F value"],
    p_value = tab[i, "Pr(>F)"]))
}

fit_case <- function(data, formula, group, contrasts = NULL, newdata = NULL, type3 = FALSE, note = NULL) {
  dat <- DATA[[data]]
  form <- as.formula(formula)
  fit <- function(start = NULL) suppressMessages(
    lmerTest::lmer(form, data = dat, REML = TRUE, contrasts = contrasts, start = start))
  m_def <- fit()
  devfun <- lme4::lmer(form, data = dat, REML = TRUE, contrasts = contrasts, devFunOnly = TRUE)
  vals <- vapply(THETA_GRID, function(th) devfun(th), numeric(1))
  m_rs <- fit(list(theta = THETA_GRID[which.min(vals)]))
  crit <- function(m) devfun(getME(m, "theta"))
  use_restart <- crit(m_rs) < crit(m_def) - CRIT_TOL
  m <- if (use_restart) m_rs else m_def
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    data = data,
    formula = formula,
    contrasts = contrasts,
    criterion = crit(m),
    used = if (use_restart) "restart" else "default",
    coef_names = names(fixef(m)),
    fixef = unname(fixef(m)),
    se = unname(sqrt(diag(as.matrix(vcov(m))))),
    var_group = vc$vcov[vc$grp == group],
    sigma2 = sigma(m)^2,
    theta = unname(getME(m, "theta")),
    nobs = nobs(m)
  )
  if (!is.null(newdata)) {
    out$newdata <- newdata
    out$predict_re_form_na <- unname(predict(m, newdata = as.data.frame(newdata), re.form = NA))
  }
  if (type3) {
    out$anova_type3 <- list(
      satterthwaite = rows_of(anova(m, type = 3, ddf = "Satterthwaite")),
      kenward_roger = rows_of(anova(m, type = 3, ddf = "Kenward-Roger")))
  }
  if (!is.null(note)) out$note <- note
  out
}

fits <- list()
fits$loblolly_I <- fit_case("loblolly", "height ~ age + I(age^2) + (1|Seed)", "Seed",
  note = "age is an integer column (read.csv); I(age^2) is the square")
fits$loblolly_poly <- fit_case("loblolly", "height ~ poly(age, 2) + (1|Seed)", "Seed",
  newdata = list(age = c(3, 7.5, 12, 30)))
fits$orthodont_poly <- fit_case("orthodont", "distance ~ poly(age, 2) + Sex + (1|Subject)", "Subject",
  newdata = list(age = c(8, 9, 11.5, 16), Sex = c("Male", "Female", "Female", "Male")), type3 = TRUE)
fits$orthodont_poly_by_sex <- fit_case("orthodont", "distance ~ poly(age, 2) * Sex + (1|Subject)", "Subject",
  type3 = TRUE)
fits$orthodont_scale_by_sex <- fit_case("orthodont", "distance ~ scale(age) * Sex + (1|Subject)", "Subject",
  newdata = list(age = c(8, 10.5, 15), Sex = c("Female", "Male", "Female")), type3 = TRUE)
fits$orthodont_factor <- fit_case("orthodont", "distance ~ factor(age) + Sex + (1|Subject)", "Subject",
  type3 = TRUE)
fits$orthodont_age_by_sex_sum <- fit_case("orthodont", "distance ~ age * Sex + (1|Subject)", "Subject",
  contrasts = list(Sex = "contr.sum"), type3 = TRUE)
fits$orthodont_age_by_sex <- fit_case("orthodont", "distance ~ age * Sex + (1|Subject)", "Subject",
  type3 = TRUE)
fits$sleepstudy_scale <- fit_case("sleepstudy", "Reaction ~ scale(Days) + (1|Subject)", "Subject",
  newdata = list(Days = c(0, 4.5, 12)))
fits$sleepstudy_math <- fit_case("sleepstudy", "log(Reaction) ~ sqrt(Days) + exp(Days/10) + (1|Subject)",
  "Subject", newdata = list(Days = c(0, 4.5, 12)))
fits$oats_ordered <- fit_case("oats", "yield ~ nitro + Block + (1|Variety)", "Variety", type3 = TRUE,
  note = "Block is an ordered factor: contr.poly")
fits$insteval_ordered <- fit_case("insteval", "y ~ studage + lectage + service + (1|d)", "d", type3 = TRUE,
  note = "studage and lectage are ordered factors: contr.poly")
for (coding in c("contr.treatment", "contr.sum", "contr.helmert", "contr.SAS", "contr.poly")) {
  label <- paste0("oats_", sub("contr.", "", coding, fixed = TRUE))
  fits[[label]] <- fit_case("oats", "yield ~ factor(nitro) * Variety + (1|Block)", "Block",
    contrasts = setNames(list(coding, coding), c("factor(nitro)", "Variety")), type3 = TRUE)
}

## The terms R makes of formula-level syntax, for the translator's own tests:
## per formula the term labels, the variables of each term and the rank of the
## model matrix on a small data set with factors a (3 levels), b (2), c (4)
## and numbers x, z.
set.seed(1)
td <- data.frame(a = factor(rep(c("a1", "a2", "a3"), 16)), b = factor(rep(c("b1", "b2"), each = 24)),
                 c = factor(rep(c("c1", "c2", "c3", "c4"), each = 3, times = 4)),
                 x = rnorm(48), z = rnorm(48))
TERM_FORMULAS <- c(
  "~ a + b", "~ a * b", "~ a:b", "~ a %in% b", "~ a/b", "~ (a + b + c)^2", "~ a*b*c - a:b:c",
  "~ x * a", "~ x:a", "~ 0 + a", "~ -1 + a + x", "~ a + x - 1", "~ x + I(x^2) + a:b",
  "~ a/(b + x)", "~ x %in% a", "~ (a + x)^2 - x", "~ a*b + c %in% a", "~ x^2", "~ (x + z)**2"
)
terms_ref <- lapply(TERM_FORMULAS, function(f) {
  tt <- terms(as.formula(f))
  fac <- attr(tt, "factors")
  labels <- attr(tt, "term.labels")
  vars <- lapply(labels, function(l) rownames(fac)[fac[, l] > 0])
  mm <- model.matrix(as.formula(f), td)
  list(formula = f, term_labels = labels, term_variables = vars, intercept = attr(tt, "intercept"),
       rank = qr(mm)$rank)
})
write.csv(td, file.path(ref_dir, "dialect_terms.csv"), row.names = FALSE)

fits$`_about` <- list(
  script = "tests/data/r/make_dialect_reference.R",
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")),
  pbkrtest = as.character(packageVersion("pbkrtest")),
  fields = paste(
    "criterion: REML criterion of the kept fit; coef_names/fixef/se in lme4's column order;",
    "predict_re_form_na: predict(m, newdata, re.form = NA); anova_type3: lmerTest anova(m, type = 3)",
    "rows {term, sum_sq, mean_sq, num_df, den_df, f_value, p_value}")
)
write_json(list(fits = fits, terms = terms_ref), out_file, auto_unbox = TRUE, digits = NA, pretty = TRUE)
cat("wrote", out_file, "\n")
