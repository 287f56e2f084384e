#!/usr/bin/env Rscript
## make_multi_real_reference.R
##
## Writes tests/data/multi_real/: real data sets from R packages (lme4, mlmRev,
## nlme, plm, AER) fitted with two to four random-intercept terms (nested,
## crossed, mixed), one CSV per case (the columns of its model only, grouping
## columns as text) and reference.json with, per case, REML and ML:
##   - `reml`, `ml`: the global optimum over every theta >= 0: a grid over all
##     thetas of lme4's own deviance function (devFunOnly = TRUE), then lmer()
##     restarted from the GRID_RESTARTS best grid points; the lowest of these
##     fits and of the default fit is kept (fields as tests/data/multi/reference.json);
##     REML also has lmerTest's Satterthwaite df and p-values;
##   - `reml_lme4_default`, `ml_lme4_default`: lmer() from its default start;
##   - `grid`: the grid's points per theta, its total size, range and best point.
## The model is fitted to the CSV read back (text columns become factors with
## levels in C-locale order, pandas' and formulaic's), so the coefficient names
## and the data are those the Python tests see.
##
## Run from the repository root:
##     Rscript tests/data/r/make_multi_real_reference.R [case ...]
## (with case names: refit only those, keeping the others of reference.json).
## It takes a few minutes (most of it the grids of the larger cases) and gives
## the same files on every run (the subsets are drawn with set.seed).

suppressPackageStartupMessages({
  library(lme4)
  library(lmerTest)
  library(jsonlite)
})

out_dir <- file.path("tests", "data", "multi_real")
if (!dir.exists(out_dir))
  stop("run this script from the repository root (tests/data/multi_real not found)")

## Points per theta of the grid (0 and a log scale from GRID_LOW to GRID_HIGH):
## dense for two terms, coarser as the grid's size grows as points^k.
GRID_POINTS <- c(`2` = 25L, `3` = 15L, `4` = 9L)
GRID_LOW <- 1e-3
GRID_HIGH <- 1e3
GRID_RESTARTS <- 8L
## The default fit counts as having missed the global optimum above this gap.
MISSED_TOL <- 1e-6

grid_values <- function(points) c(0, exp(seq(log(GRID_LOW), log(GRID_HIGH), length.out = points - 1L)))

## ---- the cases -------------------------------------------------------------
ns <- function(pkg, name) { e <- new.env(); data(list = name, package = pkg, envir = e); e[[name]] }
pdata <- ns
as_text <- function(d, cols) { for (c in cols) d[[c]] <- as.character(d[[c]]); d }
## Whole levels of `col`, `n` of them, drawn with a fixed seed.
sample_levels <- function(d, col, n, seed) {
  set.seed(seed)
  keep <- sample(sort(unique(as.character(d[[col]]))), n)
  d[as.character(d[[col]]) %in% keep, ]
}

cases <- list()
add <- function(name, data, formula, grouping, about) {
  vars <- all.vars(as.formula(formula))
  data <- as_text(data[, vars, drop = FALSE], grouping)
  data <- data[complete.cases(data), , drop = FALSE]
  cases[[name]] <<- list(data = data, formula = formula, grouping = grouping, about = about)
}

## lme4
add("cake_replicate_recipe", ns("lme4", "cake"), "angle ~ recipe + temp + (1 | replicate/recipe)",
    c("replicate", "recipe"), "lme4 cake: recipes within replicates (nested), numeric temperature")
sl <- ns("lme4", "sleepstudy"); sl$day <- paste0("d", sl$Days)
add("sleepstudy_subject_day", sl, "Reaction ~ Days + (1 | Subject) + (1 | day)",
    c("Subject", "day"), "lme4 sleepstudy: Subject crossed with the day as a factor beside its linear trend (day variance near 0)")
add("pastes_sample_batch", ns("lme4", "Pastes"), "strength ~ 1 + (1 | batch) + (1 | sample)",
    c("batch", "sample"), "lme4 Pastes written with the explicit sample factor (batch + sample = batch/cask)")
ie <- sample_levels(ns("lme4", "InstEval"), "d", 120, 1)
add("insteval_s_d_dept", ie, "y ~ service + (1 | s) + (1 | d) + (1 | dept)",
    c("s", "d", "dept"), "lme4 InstEval, 120 lecturers drawn whole: students x lecturers crossed, lecturers within departments")
ie2 <- sample_levels(ns("lme4", "InstEval"), "d", 60, 2)
add("insteval_s_d", ie2, "y ~ service + studage + (1 | s) + (1 | d)",
    c("s", "d"), "lme4 InstEval, 60 lecturers drawn whole: students x lecturers crossed, sparse cells")
add("insteval_four_terms", ie2, "y ~ service + (1 | s) + (1 | d) + (1 | dept) + (1 | lectage)",
    c("s", "d", "dept", "lectage"), "lme4 InstEval, 60 lecturers: four crossed/nested terms, a small one (lectage, 6 levels)")

## mlmRev
ss <- ns("mlmRev", "ScotsSec")
add("scotssec_primary_second", ss, "attain ~ verbal + sex + (1 | primary) + (1 | second)",
    c("primary", "second"), "mlmRev ScotsSec: primary x secondary school, partially crossed")
add("scotssec_social", ss, "attain ~ verbal + sex + factor(social) + (1 | primary) + (1 | second)",
    c("primary", "second"), "mlmRev ScotsSec with social class as factor(): more fixed effects")
ex <- ns("mlmRev", "Exam")
add("exam_school_intake", ex, "normexam ~ standLRT + sex + (1 | school/intake)",
    c("school", "intake"), "mlmRev Exam: intake bands within schools (nested)")
add("exam_contextual", ex, "normexam ~ standLRT + schavg + type + (1 | school/intake)",
    c("school", "intake"), "mlmRev Exam: school average intake (contextual), school type, intake band within school")
ch <- sample_levels(ns("mlmRev", "Chem97"), "lea", 25, 3)
add("chem97_lea_school", ch, "score ~ gcsescore + gender + (1 | lea/school)",
    c("lea", "school"), "mlmRev Chem97, 25 LEAs drawn whole: schools within LEAs, strong GCSE slope")
eg <- ns("mlmRev", "egsingle")
add("egsingle_school_child", eg, "math ~ year + lowinc + (1 | schoolid/childid)",
    c("schoolid", "childid"), "mlmRev egsingle: children within schools, repeated years, school-level % low income")
hs <- ns("mlmRev", "Hsb82")
add("hsb82_school_sex", hs, "mAch ~ cses + meanses + sector + (1 | school/sx)",
    c("school", "sx"), "mlmRev Hsb82: sex within school, group-mean-centred SES and its mean (contextual)")
mm <- ns("mlmRev", "Mmmec"); mm$lrate <- log((mm$deaths + 0.5) / mm$expected)
add("mmmec_nation_region", mm, "lrate ~ uvb + (1 | nation/region)",
    c("nation", "region"), "mlmRev Mmmec: regions within 9 nations, log rate ratio on UV-B")
st <- sample_levels(ns("mlmRev", "star"), "sch", 12, 4)
add("star_student_teacher_school", st, "math ~ gr + cltype + (1 | id) + (1 | sch/tch)",
    c("id", "sch", "tch"), "mlmRev star, 12 schools drawn whole: students crossed with teachers over grades, teachers within schools")
gc <- ns("mlmRev", "Gcsemv")
gl <- rbind(data.frame(school = gc$school, student = gc$student, gender = gc$gender, part = "written", score = gc$written),
            data.frame(school = gc$school, student = gc$student, gender = gc$gender, part = "course", score = gc$course))
add("gcsemv_school_student", gl, "score ~ part * gender + (1 | school/student)",
    c("school", "student"), "mlmRev Gcsemv stacked (written and course work): students within schools, two scores each")
bd <- ns("mlmRev", "bdf"); bd$iq_verb <- bd$IQ.verb
add("bdf_school_class", bd, "langPOST ~ iq_verb + ses + (1 | schoolNR/classNR)",
    c("schoolNR", "classNR"), "mlmRev bdf: 133 classes in 131 schools, the two terms nearly confounded (a ridge)")
ox <- ns("mlmRev", "Oxboys")
add("oxboys_subject_occasion", ox, "height ~ age + (1 | Subject) + (1 | Occasion)",
    c("Subject", "Occasion"), "mlmRev Oxboys: boys crossed with occasions beside a linear age trend")

## nlme
oats <- ns("nlme", "Oats"); oats <- data.frame(Block = as.character(oats$Block), Variety = as.character(oats$Variety),
                                               nitro = oats$nitro, yield = oats$yield)
add("oats_factor_nitro", oats, "yield ~ factor(nitro) + (1 | Block/Variety)",
    c("Block", "Variety"), "nlme Oats with nitrogen as factor(): split plot")
add("machines_worker_machine", ns("nlme", "Machines"), "score ~ Machine + (1 | Worker/Machine)",
    c("Worker", "Machine"), "nlme Machines: worker x machine interaction within worker")
as <- ns("nlme", "Assay")
as <- data.frame(Block = as.character(as$Block), sample = as.character(as$sample),
                 dilut = as.character(as$dilut), logDens = as$logDens)
add("assay_block_sample_dilut", as, "logDens ~ sample + dilut + (1 | Block) + (1 | Block:sample) + (1 | Block:dilut)",
    c("Block", "sample", "dilut"), "nlme Assay: block, sample within block and dilution within block (a variance near 0)")
add("pixel_dog_side", ns("nlme", "Pixel"), "pixel ~ day + I(day^2) + (1 | Dog/Side)",
    c("Dog", "Side"), "nlme Pixel: side within dog, quadratic in day")
orth <- ns("nlme", "Orthodont"); orth$agef <- paste0("a", orth$age)
add("orthodont_subject_age", orth, "distance ~ age + Sex + (1 | Subject) + (1 | agef)",
    c("Subject", "agef"), "nlme Orthodont: subjects crossed with age as a factor beside its trend (age variance near 0)")
add("ergostool_subject_type", ns("nlme", "ergoStool"), "effort ~ 1 + (1 | Subject) + (1 | Type)",
    c("Subject", "Type"), "nlme ergoStool: stool type as a random factor crossed with subject")
add("alfalfa_block_variety", ns("nlme", "Alfalfa"), "Yield ~ Date + Variety + (1 | Block/Variety)",
    c("Block", "Variety"), "nlme Alfalfa: split plot, variety within block")
bw <- ns("nlme", "BodyWeight"); bw$timef <- paste0("t", bw$Time)
add("bodyweight_rat_time", bw, "weight ~ Time * Diet + (1 | Rat) + (1 | timef)",
    c("Rat", "timef"), "nlme BodyWeight: rats crossed with time as a factor beside diet-specific trends")
wh <- ns("nlme", "Wheat2")
add("wheat2_block_variety", wh, "yield ~ 1 + (1 | Block) + (1 | variety)",
    c("Block", "variety"), "nlme Wheat2: block x variety crossed, complete")

## plm
gr <- pdata("plm", "Grunfeld")
add("grunfeld_firm_year", gr, "inv ~ value + capital + (1 | firm) + (1 | year)",
    c("firm", "year"), "plm Grunfeld: two-way random effects, firm x year")
pr <- pdata("plm", "Produc")
add("produc_region_state_year", pr, "log(gsp) ~ log(pcap) + log(pc) + log(emp) + unemp + (1 | region/state) + (1 | year)",
    c("region", "state", "year"), "plm Produc: states within regions, crossed with year; strong fixed effects")
add("produc_four_terms", pr, "log(gsp) ~ log(pcap) + log(pc) + log(emp) + unemp + (1 | region/state) + (1 | year) + (1 | region:year)",
    c("region", "state", "year"), "plm Produc: region/state, year and region x year (four terms)")
cg <- pdata("plm", "Cigar")
add("cigar_state_year", cg, "sales ~ price + ndi + (1 | state) + (1 | year)",
    c("state", "year"), "plm Cigar: state x year, complete panel")
em <- pdata("plm", "EmplUK")
add("empluk_firm_year", em, "log(emp) ~ log(wage) + log(capital) + (1 | firm) + (1 | year)",
    c("firm", "year"), "plm EmplUK: unbalanced firm x year")

## AER
cs <- pdata("AER", "CigarettesSW")
add("cigarettessw_state_year", cs, "log(packs) ~ log(price) + log(income) + (1 | state) + (1 | year)",
    c("state", "year"), "AER CigarettesSW: 48 states x 2 years (a two-level year term)")
fa <- pdata("AER", "Fatalities"); fa$frate <- fa$fatal / fa$pop * 1e4
add("fatalities_state_year", fa, "frate ~ beertax + (1 | state) + (1 | year)",
    c("state", "year"), "AER Fatalities: traffic deaths per 10,000 on beer tax, state x year")
gu <- pdata("AER", "Guns")
add("guns_state_year", gu, "log(violent) ~ law + prisoners + (1 | state) + (1 | year)",
    c("state", "year"), "AER Guns: state x year, shall-carry law")

## ---- fitting ---------------------------------------------------------------
radix_factors <- function(d) {
  for (c in names(d)) if (is.character(d[[c]]))
    d[[c]] <- factor(d[[c]], levels = sort(unique(d[[c]]), method = "radix"))
  d
}

crit <- function(m) if (isREML(m)) REMLcrit(m) else deviance(m)

describe <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  vc <- vc[vc$grp != "Residual", ]
  se <- sqrt(diag(as.matrix(vcov(m))))
  names(se) <- names(fixef(m))
  ng <- ngrps(m)
  list(criterion = crit(m), fixef = as.list(fixef(m)), se = as.list(se),
       theta = as.list(getME(m, "theta")), var = as.list(setNames(vc$vcov, vc$grp)),
       sigma2 = sigma(m)^2, loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m),
       singular = isSingular(m), nobs = nobs(m), ngroups = as.list(ng[names(ng)]))
}

fit_case <- function(case, d, REML) {
  f <- as.formula(case$formula)
  ctrl <- lmerControl(check.conv.singular = "ignore", calc.derivs = FALSE)
  fit <- function(start = NULL) suppressMessages(suppressWarnings(
    lme4::lmer(f, data = d, REML = REML, start = start, control = ctrl)))
  default <- fit()
  devfun <- lme4::lmer(f, data = d, REML = REML, devFunOnly = TRUE)
  k <- length(getME(default, "theta"))
  points <- GRID_POINTS[[as.character(k)]]
  grid <- as.matrix(expand.grid(rep(list(grid_values(points)), k)))
  values <- apply(grid, 1, function(th) devfun(as.numeric(th)))
  best <- order(values)[seq_len(GRID_RESTARTS)]
  fits <- lapply(best, function(i) fit(start = list(theta = as.numeric(grid[i, ]))))
  restarted <- vapply(fits, crit, 0)
  global <- fits[[which.min(restarted)]]
  used <- "restart"
  if (crit(default) <= crit(global)) { global <- default; used <- "default" }
  out <- describe(global)
  if (REML) {
    coefs <- summary(as_lmerModLmerTest(global), ddf = "Satterthwaite")$coefficients
    out$df_satterthwaite <- as.list(setNames(coefs[, "df"], rownames(coefs)))
    out$p_satterthwaite <- as.list(setNames(coefs[, "Pr(>|t|)"], rownames(coefs)))
  }
  list(global = out, default = describe(default),
       grid = list(points_per_theta = points, size = nrow(grid), low = GRID_LOW, high = GRID_HIGH,
                   restarts = GRID_RESTARTS, best_theta = as.numeric(grid[best[1], ]),
                   best_criterion = values[best[1]], restart_criteria = restarted, used = used,
                   default_missed_global = crit(default) > crit(global) + MISSED_TOL))
}

## Named cases on the command line are refitted into the existing file; none: all.
only <- commandArgs(trailingOnly = TRUE)
reference <- list()
if (length(only)) {
  reference <- fromJSON(file.path(out_dir, "reference.json"), simplifyVector = FALSE)
  reference[["_about"]] <- NULL
}
for (name in if (length(only)) only else names(cases)) {
  case <- cases[[name]]
  file <- paste0(name, ".csv")
  write.csv(case$data, file.path(out_dir, file), row.names = FALSE)
  classes <- setNames(rep("character", length(case$grouping)), case$grouping)
  d <- radix_factors(read.csv(file.path(out_dir, file), colClasses = classes))
  t0 <- proc.time()[["elapsed"]]
  reml <- fit_case(case, d, TRUE)
  ml <- fit_case(case, d, FALSE)
  elapsed <- proc.time()[["elapsed"]] - t0
  cat(sprintf("%-32s n=%5d k=%d  REML %.6f (default %+.2e)  ML %.6f (default %+.2e)  %.1fs\n",
              name, nrow(d), length(reml$global$theta), reml$global$criterion,
              reml$default$criterion - reml$global$criterion, ml$global$criterion,
              ml$default$criterion - ml$global$criterion, elapsed))
  reference[[name]] <- list(file = file, formula = case$formula, about = case$about,
                            reml = reml$global, ml = ml$global,
                            reml_lme4_default = reml$default, ml_lme4_default = ml$default,
                            reml_grid = reml$grid, ml_grid = ml$grid, r_seconds = elapsed)
}
reference[["_about"]] <- list(
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  lmerTest = as.character(packageVersion("lmerTest")), mlmRev = as.character(packageVersion("mlmRev")),
  nlme = as.character(packageVersion("nlme")), plm = as.character(packageVersion("plm")),
  AER = as.character(packageVersion("AER")), grid_points = as.list(GRID_POINTS),
  grid_low = GRID_LOW, grid_high = GRID_HIGH, grid_restarts = GRID_RESTARTS)
writeLines(toJSON(reference, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null"),
           file.path(out_dir, "reference.json"))
