"""`omnisdk pipeline`: base, specialists, fusion, drift check, recovery, rehearsal and the joint baseline, evaluated."""
