"""The unit tier: pure functions, no pipeline run, model export, emulator
or subprocess (`./run_tests.sh -m unit`, under 60 s)."""
