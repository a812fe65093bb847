# The real-Kubernetes test tier (tests/k8s/, docs/testing.md): etcd, kube-apiserver, kube-scheduler and kubelet built
# from Kubernetes' own Go modules at the release pinned in tests/k8s/controlplane/go.mod, plus fake-cri (Kubernetes'
# fake CRI runtime, for the kubelet). The binaries live in a cache
# directory keyed by that version, outside the tree; the Go build cache makes a rebuild after `make clean` cheap.
K8S_MOD := tests/k8s/controlplane
K8S_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" { print $$2; exit }' $(K8S_MOD)/go.mod)
K8S_CACHE ?= $(HOME)/.cache/kube-vgpu/k8s-$(K8S_VERSION)
K8S_BIN := $(K8S_CACHE)/bin
K8S_COMPONENTS := etcd kube-apiserver kube-scheduler kubelet fake-cri
K8S_STAMP := $(K8S_BIN)/.built
K8S_SRC := $(K8S_MOD)/go.mod $(K8S_MOD)/go.sum $(wildcard $(K8S_MOD)/*/*.go)
K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
K8S_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(K8S_MINOR)
BUILD_TARGETS += $(K8S_STAMP)

# `nice`: a cold build takes every core for many minutes (docs/testing.md has the figures).
$(K8S_STAMP): $(K8S_SRC) mk/k8s.mk
	@mkdir -p $(K8S_BIN)
	cd $(K8S_MOD) && nice -n 5 go build -trimpath -ldflags '$(K8S_LDFLAGS)' -o $(K8S_BIN)/ \
	  $(addprefix ./,$(K8S_COMPONENTS))
	touch $@

.PHONY: k8s-controlplane
k8s-controlplane: $(K8S_STAMP)
