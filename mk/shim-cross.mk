# The shipped shim: libvcuda.so built for a glibc 2.17 baseline on x86_64 and aarch64 with zig's cc (PyPI
# `ziglang`, a dev extra), so it loads from /etc/ld.so.preload in any image from CentOS 7 / UBI 7 on
# (docs/shim.md, "Images and architectures"). Same sources and flags as the gcc dev build in mk/shim.mk;
# tests/contract/test_shim_abi.py checks the symbol versions, the architecture and the exports.
# zig caches its glibc stubs and every compiled file in ~/.cache/zig: 16-18 s for both architectures from cold,
# under a second after one .c file changed, about 9 s after a shared header changed (2-vCPU machine).
# This file is read before mk/shim.mk (names sort so): names used in targets and prerequisites are set here;
# SHIM_CFLAGS and SHIM_CUDA_INC are used only in recipes, which expand after every fragment is read.
SHIM_GLIBC_BASELINE := 2.17
SHIM_CROSS_ARCHS := x86_64 aarch64
SHIM_CROSS_SRC := $(wildcard vcuda/shim/*.c)
SHIM_CROSS_HDR := $(wildcard vcuda/shim/*.h)
SHIM_CROSS_LIBS := $(foreach a,$(SHIM_CROSS_ARCHS),$(BUILD)/shim/$(a)-glibc$(SHIM_GLIBC_BASELINE)/libvcuda.so)
ZIG_CC = $(PY) -m ziglang cc

BUILD_TARGETS += $(SHIM_CROSS_LIBS)

$(SHIM_CROSS_LIBS): $(BUILD)/shim/%-glibc$(SHIM_GLIBC_BASELINE)/libvcuda.so: $(SHIM_CROSS_SRC) $(SHIM_CROSS_HDR) \
  mk/shim.mk mk/shim-cross.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	@# -mcpu=baseline: no instruction beyond the architecture's base, whatever the build machine's CPU has.
	$(ZIG_CC) -target $*-linux-gnu.$(SHIM_GLIBC_BASELINE) -mcpu=baseline $(SHIM_CFLAGS) -fPIC \
	  -fvisibility=hidden -I"$(SHIM_CUDA_INC)" -Ivcuda/shim -shared -Wl,-soname,libvcuda.so -Wl,-Bsymbolic \
	  -o $@ $(SHIM_CROSS_SRC) -ldl

.PHONY: shim-cross
shim-cross: $(SHIM_CROSS_LIBS)
