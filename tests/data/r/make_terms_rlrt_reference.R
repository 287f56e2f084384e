# The exact restricted likelihood-ratio test of one variance with the other terms as
# nuisance (issue 12): RLRsim's exactRLRT(m, mA, m0) (Greven, Crainiceanu, Kuechenhoff and
# Peters 2008). mA has every term, m0 all but the tested one, m only the tested one (its
# exact Crainiceanu-Ruppert null approximates the statistic's). The observed statistic is
# 2 (logLik(mA) - logLik(m0)) on the REML scale; the p-value is simulated, so it is written
# with the number of draws (nsim = 1e5, seed 1) for the tests to set a Monte Carlo tolerance.
#
# Cases (data in tests/data/multi):
#   pastes_cask         strength ~ 1 + (1 | batch/cask): test cask:batch, batch nuisance
#   pastes_batch        the same model: test batch, cask:batch nuisance
#   oats_variety        yield ~ nitro + (1 | Block/Variety): test Variety:Block
#   penicillin_sample   diameter ~ 1 + (1 | plate) + (1 | sample): test sample
#   sim_items           y ~ x + cond + (1 | subj) + (1 | item) (simulated): test item
#   sim_crossed_item    y ~ x + (1 | subj) + (1 | item) (simulated, 45 rows): test item
#   sim_nested_class    y ~ x + (1 | region/school/class) (simulated): test the classes,
#                       two nuisance terms (school:region, region)
#
# Run from the repository root (a few minutes):
#
#     Rscript tests/data/r/make_terms_rlrt_reference.R
#
# Writes tests/data/multi/rlrt_reference.json.
suppressPackageStartupMessages({
  library(lme4)
  library(RLRsim)
  library(jsonlite)
})

dir <- "tests/data/multi"
nsim <- 1e5
seed <- 1

cases <- list(
  pastes_cask = list(file = "pastes.csv", groups = c("batch", "cask"),
                     mA = strength ~ 1 + (1 | batch/cask), m0 = strength ~ 1 + (1 | batch),
                     m = strength ~ 1 + (1 | batch:cask)),
  pastes_batch = list(file = "pastes.csv", groups = c("batch", "cask"),
                      mA = strength ~ 1 + (1 | batch/cask), m0 = strength ~ 1 + (1 | batch:cask),
                      m = strength ~ 1 + (1 | batch)),
  oats_variety = list(file = "oats.csv", groups = c("Block", "Variety"),
                      mA = yield ~ nitro + (1 | Block/Variety), m0 = yield ~ nitro + (1 | Block),
                      m = yield ~ nitro + (1 | Block:Variety)),
  penicillin_sample = list(file = "penicillin.csv", groups = c("plate", "sample"),
                           mA = diameter ~ 1 + (1 | plate) + (1 | sample), m0 = diameter ~ 1 + (1 | plate),
                           m = diameter ~ 1 + (1 | sample)),
  sim_items = list(file = "sim_subjects_items.csv", groups = c("subj", "item", "cond"),
                   mA = y ~ x + cond + (1 | subj) + (1 | item), m0 = y ~ x + cond + (1 | subj),
                   m = y ~ x + cond + (1 | item)),
  sim_crossed_item = list(file = "sim_crossed_seedlike.csv", groups = c("subj", "item"),
                          mA = y ~ x + (1 | subj) + (1 | item), m0 = y ~ x + (1 | subj),
                          m = y ~ x + (1 | item)),
  sim_nested_class = list(file = "sim_nested_boundary.csv", groups = c("region", "school", "class"),
                          mA = y ~ x + (1 | region/school/class), m0 = y ~ x + (1 | region/school),
                          m = y ~ x + (1 | region:school:class))
)

result <- list()
for (name in names(cases)) {
  case <- cases[[name]]
  classes <- setNames(rep("character", length(case$groups)), case$groups)
  data <- read.csv(file.path(dir, case$file), colClasses = classes)
  for (g in case$groups) data[[g]] <- factor(data[[g]])
  fits <- lapply(case[c("mA", "m0", "m")], function(f) suppressMessages(lmer(f, data = data, REML = TRUE)))
  test <- suppressMessages(exactRLRT(fits$m, fits$mA, fits$m0, nsim = nsim, seed = seed))
  deparsed <- lapply(case[c("mA", "m0", "m")], function(f) paste(deparse(f), collapse = " "))
  result[[name]] <- c(list(file = case$file), deparsed,
                      list(criterion_mA = REMLcrit(fits$mA), criterion_m0 = REMLcrit(fits$m0),
                           statistic = unname(test$statistic), p_value = test$p.value,
                           nsim = if (is.null(test$sample)) 0 else length(test$sample)))
}
result[["_about"]] <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                           RLRsim = as.character(packageVersion("RLRsim")), nsim = nsim, seed = seed,
                           script = "tests/data/r/make_terms_rlrt_reference.R")
writeLines(toJSON(result, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(dir, "rlrt_reference.json"))
