# The README's two commands:
#   make demo   set up, then run the workflow on the embedded default (Fashion-MNIST, tiny models)
#   make test   set up, then run the test suite
# and for the edit loop:
#   make test-fast   the unit tests only (no end-to-end workflow, no SLURM cluster; a few minutes)
#   make unlock      remove the locks a killed Snakemake session left (Snakemake's own --unlock)
# Everything is installed into ./.venv from requirements.lock; nothing outside the repository changes,
# except that, as root with apt available, the Debian package `dataset-fashion-mnist` is installed so
# that the embedded default needs no download.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CORES  ?= 2

.PHONY: setup demo test test-fast unlock lock clean-results

setup: $(VENV)/.installed fashion-mnist slurm-packages

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# Embedded default data: Debian ships Fashion-MNIST; without root or apt, drr downloads it instead
# (checked against known sha256 sums) the first time the workflow needs it.
.PHONY: fashion-mnist
fashion-mnist:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) && \
	  echo "installed Debian package dataset-fashion-mnist"; \
	else echo "note: dataset-fashion-mnist not installed; the workflow will download Fashion-MNIST"; fi

# The SLURM tests (tests/test_slurm.py) start a private single-node cluster from Debian's packages;
# as root with apt they are installed here, otherwise those tests skip. The tests never use the
# system services the packages install (on this machine type policy-rc.d keeps them stopped).
SLURM_PACKAGES := munge slurmctld slurmd slurm-client slurmdbd mariadb-server
.PHONY: slurm-packages
slurm-packages:
	@if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  (apt-get install -y -q --no-install-recommends $(SLURM_PACKAGES) >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $(SLURM_PACKAGES) >/dev/null)) && \
	  echo "installed Debian packages $(SLURM_PACKAGES)"; \
	else echo "note: SLURM packages not installed (needs root and apt); tests/test_slurm.py will skip"; fi

demo: setup
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not slurm and not rehearsal" tests

# A Snakemake session killed with SIGKILL (a closed login shell, a lost node) leaves its lock files
# in .snakemake/locks, and the next command stops with LockException until they are removed.
unlock: setup
	$(VENV)/bin/snakemake --unlock

# The paper suite's dress rehearsal on the private test cluster (tests/test_rehearsal.py; 22 min
# here, so not part of `make test`).
.PHONY: rehearsal
rehearsal: setup
	$(PY) -m pytest -q -s -m rehearsal tests/test_rehearsal.py

# Regenerate the lock file from requirements.txt in a scratch venv.
lock:
	rm -rf /tmp/drr-lock-venv && $(PYTHON) -m venv /tmp/drr-lock-venv
	/tmp/drr-lock-venv/bin/pip install --quiet --upgrade pip
	/tmp/drr-lock-venv/bin/pip install --quiet -r requirements.txt
	head -4 requirements.lock > /tmp/drr-lock-header
	(cat /tmp/drr-lock-header; /tmp/drr-lock-venv/bin/pip freeze) > requirements.lock
