# The vcuda shim (LD_PRELOAD library) and its GPU-less test harness (docs/shim.md).
# cuda.h comes from the nvidia-cuda-runtime wheel in the venv, found by a glob; no CUDA toolkit or GPU needed.
SHIM_DIR := $(BUILD)/shim
SHIM_SRC := $(wildcard vcuda/shim/*.c)
SHIM_HDR := $(wildcard vcuda/shim/*.h)
SHIM_LIB := $(SHIM_DIR)/libvcuda.so
# The TEST build reads path overrides from the environment (VCUDA_CONFIG_PATH, ...); the shipped one never does.
SHIM_TEST_LIB := $(SHIM_DIR)/libvcuda-test.so
SHIM_TEST_DEFS := -DVCUDA_TEST_BUILD
SHIM_FAKE_CUDA := $(SHIM_DIR)/fake/libcuda.so.1
SHIM_FAKE_NVML := $(SHIM_DIR)/fake/libnvidia-ml.so.1
SHIM_APPS := $(SHIM_DIR)/app_direct $(SHIM_DIR)/app_runtime $(SHIM_DIR)/app_legacy
SHIM_APPS += $(SHIM_DIR)/compute_app
SHIM_SIM := $(SHIM_DIR)/throttle_sim
SHIM_ASAN := $(SHIM_DIR)/asan/libvcuda.so $(SHIM_DIR)/asan/app_runtime
SHIM_TSAN := $(SHIM_DIR)/tsan/libvcuda.so $(SHIM_DIR)/tsan/app_runtime
SHIM_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread
SHIM_CUDA_INC = $$(dirname $$(ls $(VENV)/lib/python3*/site-packages/nvidia/cu*/include/cuda.h | head -n 1))

BUILD_TARGETS += $(SHIM_LIB) $(SHIM_TEST_LIB) $(SHIM_FAKE_CUDA) $(SHIM_FAKE_NVML) $(SHIM_APPS) $(SHIM_SIM) $(SHIM_ASAN) $(SHIM_TSAN)

# -Bsymbolic: the shim's own references to its hooks never bind to another preloaded library.
$(SHIM_LIB): $(SHIM_SRC) $(SHIM_HDR) mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -fPIC -fvisibility=hidden -I"$(SHIM_CUDA_INC)" -Ivcuda/shim -shared \
	  -Wl,-soname,libvcuda.so -Wl,-Bsymbolic -o $@ $(SHIM_SRC) -ldl

$(SHIM_TEST_LIB): $(SHIM_SRC) $(SHIM_HDR) mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) $(SHIM_TEST_DEFS) -fPIC -fvisibility=hidden -I"$(SHIM_CUDA_INC)" -Ivcuda/shim -shared \
	  -Wl,-soname,libvcuda.so -Wl,-Bsymbolic -o $@ $(SHIM_SRC) -ldl

$(SHIM_DIR)/asan/libvcuda.so: $(SHIM_SRC) $(SHIM_HDR) mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) $(SHIM_TEST_DEFS) -O1 -fsanitize=address -fno-omit-frame-pointer -fPIC -fvisibility=hidden \
	  -I"$(SHIM_CUDA_INC)" -Ivcuda/shim -shared -Wl,-soname,libvcuda.so -Wl,-Bsymbolic -o $@ $(SHIM_SRC) -ldl

# The fakes are built -Wl,-Bsymbolic like the real driver (docs/shim.md), else interception tests prove nothing.
$(SHIM_FAKE_CUDA): tests/fakes/driver/fake_cuda.c mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -fPIC -fvisibility=hidden -I"$(SHIM_CUDA_INC)" -shared -Wl,-Bsymbolic \
	  -Wl,-soname,libcuda.so.1 -o $@ $<

$(SHIM_FAKE_NVML): tests/fakes/driver/fake_nvml.c mk/shim.mk
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -fPIC -fvisibility=hidden -shared -Wl,-Bsymbolic -Wl,-soname,libnvidia-ml.so.1 -o $@ $<

$(SHIM_DIR)/app_direct: tests/shim/cuda_app.c $(SHIM_FAKE_CUDA) mk/shim.mk
	gcc $(SHIM_CFLAGS) -I"$(SHIM_CUDA_INC)" -DAPP_MODE=1 -o $@ $< $(SHIM_FAKE_CUDA) -Wl,-rpath,'$$ORIGIN/fake'

# Compute-limit test program (contexts, capture, graphs, threads), linked with the fake driver like app_direct.
$(SHIM_DIR)/compute_app: tests/shim/compute_app.c $(SHIM_FAKE_CUDA) mk/shim.mk
	gcc $(SHIM_CFLAGS) -I"$(SHIM_CUDA_INC)" -o $@ $< $(SHIM_FAKE_CUDA) -Wl,-rpath,'$$ORIGIN/fake'

$(SHIM_DIR)/app_runtime: tests/shim/cuda_app.c mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -I"$(SHIM_CUDA_INC)" -DAPP_MODE=2 -o $@ $< -ldl

$(SHIM_DIR)/app_legacy: tests/shim/cuda_app.c mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -I"$(SHIM_CUDA_INC)" -DAPP_MODE=3 -o $@ $< -ldl

$(SHIM_DIR)/asan/app_runtime: tests/shim/cuda_app.c mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -O1 -fsanitize=address -fno-omit-frame-pointer -I"$(SHIM_CUDA_INC)" -DAPP_MODE=2 -o $@ $< -ldl

# ThreadSanitizer: program and shim instrumented; the test preloads libtsan before the shim (docs/shim.md).
$(SHIM_DIR)/tsan/libvcuda.so: $(SHIM_SRC) $(SHIM_HDR) mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) $(SHIM_TEST_DEFS) -O1 -fsanitize=thread -fPIC -fvisibility=hidden \
	  -I"$(SHIM_CUDA_INC)" -Ivcuda/shim -shared -Wl,-soname,libvcuda.so -Wl,-Bsymbolic -o $@ $(SHIM_SRC) -ldl

$(SHIM_DIR)/tsan/app_runtime: tests/shim/cuda_app.c mk/shim.mk | $(VENV)/.installed
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -O1 -fsanitize=thread -I"$(SHIM_CUDA_INC)" -DAPP_MODE=2 -o $@ $< -ldl

$(SHIM_SIM): tests/shim/throttle_sim.c vcuda/shim/throttle.c vcuda/shim/throttle.h vcuda/shim/vcuda_contract.h mk/shim.mk
	@mkdir -p $(@D)
	gcc $(SHIM_CFLAGS) -Ivcuda/shim -o $@ tests/shim/throttle_sim.c vcuda/shim/throttle.c

.PHONY: shim
shim: $(SHIM_LIB) $(SHIM_TEST_LIB) $(SHIM_FAKE_CUDA) $(SHIM_FAKE_NVML) $(SHIM_APPS) $(SHIM_SIM) $(SHIM_ASAN) $(SHIM_TSAN)
