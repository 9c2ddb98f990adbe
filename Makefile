.PHONY: setup demo test lint fmt bench clean

setup:
	scripts/setup.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

lint: setup
	.venv/bin/ruff check gatewayd tests bench

bench: setup
	.venv/bin/python -m bench

clean:
	rm -rf build dist *.egg-info test-artifacts .pytest_cache
