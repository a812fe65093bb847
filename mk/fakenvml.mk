# The FAKE libnvidia-ml.so.1 for tests and the simulated cluster (tests/fakenvml/README.md).
# Built with gcc against nvml.h from the nvidia-nvml-dev wheel in the venv; no GPU or driver needed.
FAKENVML_SRC := $(wildcard tests/fakenvml/src/*.c)
FAKENVML_HDR := $(wildcard tests/fakenvml/src/*.h) tests/fakenvml/src/exports.map
FAKENVML_LIB := $(BUILD)/fakenvml/libnvidia-ml.so.1
FAKENVML_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -fvisibility=default -pthread

BUILD_TARGETS += $(FAKENVML_LIB)

# nvml.h comes with the venv (the nvidia-nvml-dev wheel); its folder is found by a glob.
$(FAKENVML_LIB): $(FAKENVML_SRC) $(FAKENVML_HDR) mk/fakenvml.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	@inc=$$(dirname $$(ls $(VENV)/lib/python3*/site-packages/nvidia/cu*/include/nvml.h | head -n 1)) && \
	  test -n "$$inc" && \
	  gcc $(FAKENVML_CFLAGS) -I"$$inc" -shared -Wl,-soname,libnvidia-ml.so.1 -Wl,--version-script=tests/fakenvml/src/exports.map -o $@ $(FAKENVML_SRC)

.PHONY: fakenvml
fakenvml: $(FAKENVML_LIB)
