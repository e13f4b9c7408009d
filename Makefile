# The README's two commands: `make demo` (main job on the embedded sample) and `make test`.
.PHONY: install demo test test-only

install:
	bash .ci/install

demo: install
	lomo-datasets demo --out lomo-demo

test: install test-only

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test-only:
	python3 -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc
