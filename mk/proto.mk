# gRPC bindings for the kubelet APIs (plugin/api/**/api.proto: device plugin and PodResources written from
# k8s.io/kubelet's pkg/apis/deviceplugin/v1beta1 and podresources/v1 api.proto; DRA v1, v1beta1 and plugin
# registration v1 copied unchanged from k8s.io/kubelet v0.37.2).
# The generated *_pb2.py, *_pb2_grpc.py and *.pyi are committed next to their .proto (so mypy and a fresh
# checkout see them); this rule regenerates them into build/proto with the pinned grpcio-tools and fails
# when they differ from the committed files. `make proto` rewrites the committed files.
PROTOS := plugin/api/deviceplugin/v1beta1/api.proto plugin/api/podresources/v1/api.proto \
  plugin/api/dra/v1/api.proto plugin/api/dra/v1beta1/api.proto plugin/api/pluginregistration/v1/api.proto
PROTO_STAMP := $(BUILD)/proto/.checked
BUILD_TARGETS += $(PROTO_STAMP)

define protoc
	$(PY) -m grpc_tools.protoc -I. --python_out=$(1) --grpc_python_out=$(1) --pyi_out=$(1) $(PROTOS)
endef

$(PROTO_STAMP): $(PROTOS) $(VENV)/.installed
	rm -rf $(BUILD)/proto && mkdir -p $(BUILD)/proto
	$(call protoc,$(BUILD)/proto)
	@for f in $$(cd $(BUILD)/proto && find plugin -type f -name '*.py*' | sort); do \
	  cmp -s $(BUILD)/proto/$$f $$f || { echo "generated $$f differs from the committed file: run make proto"; exit 1; }; \
	done
	touch $@

.PHONY: proto
proto: venv
	$(call protoc,.)
