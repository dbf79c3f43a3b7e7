# Two commands do all the set-up on a fresh machine:
#   make demo   installs graphprune in .venv and runs the main job on the bundled example model
#   make test   installs graphprune with its test tools in .venv and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

# torch is installed first and pinned: 2.13.0 is a CPU wheel; a looser requirement pulls CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p build
	$(BIN)/graphprune opt examples/models.py:mobilenet_v2 -p fold-bn,dce --verify -o build/mobilenet_v2.onnx
	$(BIN)/graphprune inspect build/mobilenet_v2.onnx
	$(BIN)/graphprune prune build/mobilenet_v2.onnx --channels 0.5 --verify -o build/mobilenet_v2_pruned.onnx \
		--report build/prune_report.json --plot build/prune_widths.png

test: $(STAMP)
	$(BIN)/ruff check graphprune passes backends tests benchmarks examples
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check graphprune passes backends tests benchmarks examples

clean:
	rm -rf $(VENV) build dist *.egg-info
