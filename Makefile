# Everything installs into .venv in the repo root. torch is installed first and pinned, so pip never
# pulls the multi-GB CUDA build when it resolves the rest.
PY := .venv/bin/python
TORCH := torch==2.13.0

.PHONY: venv test demo bench clean

venv: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest -q

demo: venv
	$(PY) -m irn_batch.demo

bench: venv
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf .venv build *.egg-info
