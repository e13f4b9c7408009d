# The README's two commands: `make demo` (main job on the embedded sample) and `make test`.
.PHONY: install demo test test-only bench

install:
	bash .ci/install

demo: install
	lomo-datasets demo --out lomo-demo

test: install test-only

test-only:
	python3 -m pytest -q tests
