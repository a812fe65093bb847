# The FAKE libnvidia-ml.so.1 for tests and the simulated cluster (tests/fakes/nvml/README.md).
# Built with gcc against nvml.h from the nvidia-nvml-dev wheel in the venv; no GPU or driver needed.
FAKE_NVML_SRC := $(wildcard tests/fakes/nvml/src/*.c)
FAKE_NVML_HDR := $(wildcard tests/fakes/nvml/src/*.h) tests/fakes/nvml/src/exports.map
FAKE_NVML_LIB := $(BUILD)/fakes/nvml/libnvidia-ml.so.1
FAKE_NVML_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=default -pthread

BUILD_TARGETS += $(FAKE_NVML_LIB)

# nvml.h comes with the venv (the nvidia-nvml-dev wheel); its folder is found by a glob.
$(FAKE_NVML_LIB): $(FAKE_NVML_SRC) $(FAKE_NVML_HDR) mk/fake_nvml.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	@inc=$$(dirname $$(ls $(VENV)/lib/python3*/site-packages/nvidia/cu*/include/nvml.h | head -n 1)) && \
	  test -n "$$inc" && \
	  gcc $(FAKE_NVML_CFLAGS) -I"$$inc" -shared -Wl,-soname,libnvidia-ml.so.1 -Wl,--version-script=tests/fakes/nvml/src/exports.map -o $@ $(FAKE_NVML_SRC)

.PHONY: fake-nvml
fake-nvml: $(FAKE_NVML_LIB)
