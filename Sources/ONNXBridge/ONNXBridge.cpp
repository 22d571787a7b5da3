// The C API of ONNXBridge.h over libonnx's generated classes.
#include "ONNXBridge.h"

#include <onnx/checker.h>
#include <onnx/onnx-ml.pb.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/unknown_field_set.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace {

// NodeProto.metadata_props was added after ONNX 1.12 (field 9, repeated StringStringEntryProto).
constexpr int kNodeMetadataPropsField = 9;

using Entry = std::pair<std::string, std::string>;

char *copyString(const std::string &text) {
    char *result = static_cast<char *>(std::malloc(text.size() + 1));
    if (result != nullptr) {
        std::memcpy(result, text.data(), text.size());
        result[text.size()] = '\0';
    }
    return result;
}

void setError(char **error, const std::string &message) {
    if (error != nullptr) *error = copyString(message);
}

OnnxBytes bytes(const std::string &text) { return OnnxBytes{text.data(), text.size()}; }

std::vector<Entry> decodeNodeMetadata(const onnx::NodeProto &node) {
    std::vector<Entry> entries;
    const auto &unknown = node.GetReflection()->GetUnknownFields(node);
    for (int i = 0; i < unknown.field_count(); ++i) {
        const auto &field = unknown.field(i);
        if (field.number() != kNodeMetadataPropsField ||
            field.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
            continue;
        }
        onnx::StringStringEntryProto entry;
        if (entry.ParseFromString(field.length_delimited())) {
            entries.emplace_back(entry.key(), entry.value());
        }
    }
    return entries;
}

const onnx::ModelProto &proto(const OnnxModel *model);

}  // namespace

struct OnnxModel {
    onnx::ModelProto proto;
    std::vector<std::vector<Entry>> nodeMetadata;
};

namespace {
const onnx::ModelProto &proto(const OnnxModel *model) { return model->proto; }
const onnx::ValueInfoProto &value(const OnnxValueInfo *v) { return *reinterpret_cast<const onnx::ValueInfoProto *>(v); }
const onnx::TensorProto &tensor(const OnnxTensor *t) { return *reinterpret_cast<const onnx::TensorProto *>(t); }
const onnx::NodeProto &node(const OnnxNode *n) { return *reinterpret_cast<const onnx::NodeProto *>(n); }
const onnx::AttributeProto &attribute(const OnnxAttribute *a) {
    return *reinterpret_cast<const onnx::AttributeProto *>(a);
}
template <typename Field>
auto repeatedData(const Field &field, size_t *count) -> decltype(field.data()) {
    *count = static_cast<size_t>(field.size());
    return field.size() == 0 ? nullptr : field.data();
}

const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto> &values(const OnnxModel *model, OnnxValueList list) {
    const auto &graph = model->proto.graph();
    switch (list) {
        case ONNX_VALUES_INPUT: return graph.input();
        case ONNX_VALUES_OUTPUT: return graph.output();
        default: return graph.value_info();
    }
}
const onnx::TensorShapeProto::Dimension &dim(const OnnxValueInfo *v, size_t axis) {
    return value(v).type().tensor_type().shape().dim(static_cast<int>(axis));
}
}  // namespace

extern "C" {

OnnxModel *onnx_model_parse(const void *data, size_t length, char **error) {
    if (length > static_cast<size_t>(INT_MAX)) {
        setError(error, "the file is " + std::to_string(length) +
                            " bytes; protobuf cannot parse messages over 2 GiB (large models keep weights "
                            "in external data files)");
        return nullptr;
    }
    try {
        auto model = new OnnxModel();
        google::protobuf::io::CodedInputStream stream(static_cast<const uint8_t *>(data), static_cast<int>(length));
        stream.SetTotalBytesLimit(INT_MAX);
        if (!model->proto.ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage()) {
            delete model;
            setError(error, "protobuf parsing failed (the file is truncated, corrupt, or not a ModelProto)");
            return nullptr;
        }
        const auto &nodes = model->proto.graph().node();
        model->nodeMetadata.reserve(nodes.size());
        for (const auto &n : nodes) model->nodeMetadata.push_back(decodeNodeMetadata(n));
        return model;
    } catch (const std::exception &exception) {
        setError(error, exception.what());
        return nullptr;
    }
}

void onnx_model_free(OnnxModel *model) { delete model; }
void onnx_free_string(char *string) { std::free(string); }
void onnx_free_buffer(void *data) { std::free(data); }

int onnx_model_serialize(const OnnxModel *model, void **data, size_t *length, char **error) {
    try {
        const size_t size = model->proto.ByteSizeLong();
        if (size > static_cast<size_t>(INT_MAX)) {
            setError(error, "the model serializes to " + std::to_string(size) +
                                " bytes, over protobuf's 2 GiB limit; move weights to external data");
            return 1;
        }
        void *buffer = std::malloc(size == 0 ? 1 : size);
        if (buffer == nullptr) {
            setError(error, "out of memory");
            return 1;
        }
        if (!model->proto.SerializeToArray(buffer, static_cast<int>(size))) {
            std::free(buffer);
            setError(error, "protobuf serialization failed");
            return 1;
        }
        *data = buffer;
        *length = size;
        return 0;
    } catch (const std::exception &exception) {
        setError(error, exception.what());
        return 1;
    }
}

int onnx_check_model_file(const char *path, char **error) {
    try {
        onnx::checker::check_model(std::string(path));
        return 0;
    } catch (const std::exception &exception) {
        setError(error, exception.what());
        return 1;
    }
}

int64_t onnx_model_ir_version(const OnnxModel *model) { return proto(model).ir_version(); }
OnnxBytes onnx_model_producer_name(const OnnxModel *model) { return bytes(proto(model).producer_name()); }
OnnxBytes onnx_model_producer_version(const OnnxModel *model) { return bytes(proto(model).producer_version()); }
OnnxBytes onnx_model_domain(const OnnxModel *model) { return bytes(proto(model).domain()); }
int64_t onnx_model_model_version(const OnnxModel *model) { return proto(model).model_version(); }
OnnxBytes onnx_model_doc_string(const OnnxModel *model) { return bytes(proto(model).doc_string()); }
int onnx_model_has_graph(const OnnxModel *model) { return proto(model).has_graph() ? 1 : 0; }

size_t onnx_model_opset_count(const OnnxModel *model) { return proto(model).opset_import_size(); }
OnnxBytes onnx_model_opset_domain(const OnnxModel *model, size_t index) {
    return bytes(proto(model).opset_import(static_cast<int>(index)).domain());
}
int64_t onnx_model_opset_version(const OnnxModel *model, size_t index) {
    return proto(model).opset_import(static_cast<int>(index)).version();
}

size_t onnx_model_metadata_count(const OnnxModel *model) { return proto(model).metadata_props_size(); }
OnnxBytes onnx_model_metadata_key(const OnnxModel *model, size_t index) {
    return bytes(proto(model).metadata_props(static_cast<int>(index)).key());
}
OnnxBytes onnx_model_metadata_value(const OnnxModel *model, size_t index) {
    return bytes(proto(model).metadata_props(static_cast<int>(index)).value());
}

OnnxBytes onnx_graph_name(const OnnxModel *model) { return bytes(proto(model).graph().name()); }

size_t onnx_graph_value_count(const OnnxModel *model, OnnxValueList list) { return values(model, list).size(); }
const OnnxValueInfo *onnx_graph_value(const OnnxModel *model, OnnxValueList list, size_t index) {
    return reinterpret_cast<const OnnxValueInfo *>(&values(model, list).Get(static_cast<int>(index)));
}

OnnxBytes onnx_value_name(const OnnxValueInfo *v) { return bytes(value(v).name()); }
int onnx_value_is_tensor(const OnnxValueInfo *v) { return value(v).type().has_tensor_type() ? 1 : 0; }
int32_t onnx_value_elem_type(const OnnxValueInfo *v) { return value(v).type().tensor_type().elem_type(); }
int onnx_value_has_shape(const OnnxValueInfo *v) { return value(v).type().tensor_type().has_shape() ? 1 : 0; }
size_t onnx_value_rank(const OnnxValueInfo *v) { return value(v).type().tensor_type().shape().dim_size(); }
int onnx_value_dim_kind(const OnnxValueInfo *v, size_t axis) {
    const auto &d = dim(v, axis);
    if (d.has_dim_value()) return 1;
    if (d.has_dim_param()) return 2;
    return 0;
}
int64_t onnx_value_dim_value(const OnnxValueInfo *v, size_t axis) { return dim(v, axis).dim_value(); }
OnnxBytes onnx_value_dim_param(const OnnxValueInfo *v, size_t axis) { return bytes(dim(v, axis).dim_param()); }

size_t onnx_graph_initializer_count(const OnnxModel *model) { return proto(model).graph().initializer_size(); }
const OnnxTensor *onnx_graph_initializer(const OnnxModel *model, size_t index) {
    return reinterpret_cast<const OnnxTensor *>(&proto(model).graph().initializer(static_cast<int>(index)));
}

OnnxBytes onnx_tensor_name(const OnnxTensor *t) { return bytes(tensor(t).name()); }
int32_t onnx_tensor_data_type(const OnnxTensor *t) { return tensor(t).data_type(); }
size_t onnx_tensor_rank(const OnnxTensor *t) { return tensor(t).dims_size(); }
int64_t onnx_tensor_dim(const OnnxTensor *t, size_t axis) { return tensor(t).dims(static_cast<int>(axis)); }
int onnx_tensor_is_external(const OnnxTensor *t) {
    return tensor(t).data_location() == onnx::TensorProto_DataLocation_EXTERNAL ? 1 : 0;
}
size_t onnx_tensor_external_count(const OnnxTensor *t) { return tensor(t).external_data_size(); }
OnnxBytes onnx_tensor_external_key(const OnnxTensor *t, size_t index) {
    return bytes(tensor(t).external_data(static_cast<int>(index)).key());
}
OnnxBytes onnx_tensor_external_value(const OnnxTensor *t, size_t index) {
    return bytes(tensor(t).external_data(static_cast<int>(index)).value());
}
int onnx_tensor_has_raw_data(const OnnxTensor *t) { return tensor(t).has_raw_data() ? 1 : 0; }
OnnxBytes onnx_tensor_raw_data(const OnnxTensor *t) { return bytes(tensor(t).raw_data()); }

const float *onnx_tensor_float_data(const OnnxTensor *t, size_t *count) {
    return repeatedData(tensor(t).float_data(), count);
}
const int32_t *onnx_tensor_int32_data(const OnnxTensor *t, size_t *count) {
    return repeatedData(tensor(t).int32_data(), count);
}
const int64_t *onnx_tensor_int64_data(const OnnxTensor *t, size_t *count) {
    return reinterpret_cast<const int64_t *>(repeatedData(tensor(t).int64_data(), count));
}
const double *onnx_tensor_double_data(const OnnxTensor *t, size_t *count) {
    return repeatedData(tensor(t).double_data(), count);
}
const uint64_t *onnx_tensor_uint64_data(const OnnxTensor *t, size_t *count) {
    return reinterpret_cast<const uint64_t *>(repeatedData(tensor(t).uint64_data(), count));
}
size_t onnx_tensor_string_count(const OnnxTensor *t) { return tensor(t).string_data_size(); }

size_t onnx_graph_node_count(const OnnxModel *model) { return proto(model).graph().node_size(); }
const OnnxNode *onnx_graph_node(const OnnxModel *model, size_t index) {
    return reinterpret_cast<const OnnxNode *>(&proto(model).graph().node(static_cast<int>(index)));
}

OnnxBytes onnx_node_name(const OnnxNode *n) { return bytes(node(n).name()); }
OnnxBytes onnx_node_op_type(const OnnxNode *n) { return bytes(node(n).op_type()); }
OnnxBytes onnx_node_domain(const OnnxNode *n) { return bytes(node(n).domain()); }
size_t onnx_node_input_count(const OnnxNode *n) { return node(n).input_size(); }
OnnxBytes onnx_node_input(const OnnxNode *n, size_t index) { return bytes(node(n).input(static_cast<int>(index))); }
size_t onnx_node_output_count(const OnnxNode *n) { return node(n).output_size(); }
OnnxBytes onnx_node_output(const OnnxNode *n, size_t index) { return bytes(node(n).output(static_cast<int>(index))); }
size_t onnx_node_attribute_count(const OnnxNode *n) { return node(n).attribute_size(); }
const OnnxAttribute *onnx_node_attribute(const OnnxNode *n, size_t index) {
    return reinterpret_cast<const OnnxAttribute *>(&node(n).attribute(static_cast<int>(index)));
}

size_t onnx_node_metadata_count(const OnnxModel *model, size_t node_index) {
    return model->nodeMetadata.at(node_index).size();
}
OnnxBytes onnx_node_metadata_key(const OnnxModel *model, size_t node_index, size_t index) {
    return bytes(model->nodeMetadata.at(node_index).at(index).first);
}
OnnxBytes onnx_node_metadata_value(const OnnxModel *model, size_t node_index, size_t index) {
    return bytes(model->nodeMetadata.at(node_index).at(index).second);
}

OnnxBytes onnx_attribute_name(const OnnxAttribute *a) { return bytes(attribute(a).name()); }
OnnxAttributeType onnx_attribute_type(const OnnxAttribute *a) {
    const auto &attr = attribute(a);
    if (attr.type() != onnx::AttributeProto_AttributeType_UNDEFINED) {
        return static_cast<OnnxAttributeType>(attr.type());
    }
    // IR version 1 files may omit `type`; infer it from the one field that is set.
    if (attr.has_f()) return ONNX_ATTRIBUTE_FLOAT;
    if (attr.has_i()) return ONNX_ATTRIBUTE_INT;
    if (attr.has_s()) return ONNX_ATTRIBUTE_STRING;
    if (attr.has_t()) return ONNX_ATTRIBUTE_TENSOR;
    if (attr.has_g()) return ONNX_ATTRIBUTE_GRAPH;
    if (attr.floats_size() > 0) return ONNX_ATTRIBUTE_FLOATS;
    if (attr.ints_size() > 0) return ONNX_ATTRIBUTE_INTS;
    if (attr.strings_size() > 0) return ONNX_ATTRIBUTE_STRINGS;
    if (attr.tensors_size() > 0) return ONNX_ATTRIBUTE_TENSORS;
    if (attr.graphs_size() > 0) return ONNX_ATTRIBUTE_GRAPHS;
    return ONNX_ATTRIBUTE_UNDEFINED;
}
float onnx_attribute_float(const OnnxAttribute *a) { return attribute(a).f(); }
int64_t onnx_attribute_int(const OnnxAttribute *a) { return attribute(a).i(); }
OnnxBytes onnx_attribute_string(const OnnxAttribute *a) { return bytes(attribute(a).s()); }
const OnnxTensor *onnx_attribute_tensor(const OnnxAttribute *a) {
    return reinterpret_cast<const OnnxTensor *>(&attribute(a).t());
}
const float *onnx_attribute_floats(const OnnxAttribute *a, size_t *count) {
    return repeatedData(attribute(a).floats(), count);
}
const int64_t *onnx_attribute_ints(const OnnxAttribute *a, size_t *count) {
    return reinterpret_cast<const int64_t *>(repeatedData(attribute(a).ints(), count));
}
size_t onnx_attribute_strings_count(const OnnxAttribute *a) { return attribute(a).strings_size(); }
OnnxBytes onnx_attribute_strings_element(const OnnxAttribute *a, size_t index) {
    return bytes(attribute(a).strings(static_cast<int>(index)));
}

}  // extern "C"

// MARK: Editing

namespace {
onnx::TensorProto &mutableInitializer(OnnxModel *model, size_t index) {
    return *model->proto.mutable_graph()->mutable_initializer(static_cast<int>(index));
}
void clearValues(onnx::TensorProto &t) {
    t.clear_raw_data();
    t.clear_float_data();
    t.clear_int32_data();
    t.clear_int64_data();
    t.clear_double_data();
    t.clear_uint64_data();
    t.clear_string_data();
    t.clear_external_data();
    t.clear_data_location();
}
onnx::NodeProto &mutableNode(OnnxModel *model, size_t index) {
    return *model->proto.mutable_graph()->mutable_node(static_cast<int>(index));
}
}  // namespace

extern "C" {

OnnxModel *onnx_model_clone(const OnnxModel *model) { return new OnnxModel(*model); }

void onnx_initializer_set_raw_data(OnnxModel *model, size_t index, const void *data, size_t length) {
    auto &t = mutableInitializer(model, index);
    clearValues(t);
    t.set_raw_data(data, length);
}

void onnx_initializer_set_external(OnnxModel *model, size_t index, const char *location, int64_t offset,
                                   int64_t length) {
    auto &t = mutableInitializer(model, index);
    clearValues(t);
    t.set_data_location(onnx::TensorProto_DataLocation_EXTERNAL);
    const std::pair<const char *, std::string> entries[] = {
        {"location", location}, {"offset", std::to_string(offset)}, {"length", std::to_string(length)}};
    for (const auto &[key, value] : entries) {
        auto *entry = t.add_external_data();
        entry->set_key(key);
        entry->set_value(value);
    }
}

size_t onnx_graph_add_initializer(OnnxModel *model, const char *name, int32_t data_type, const int64_t *dims,
                                  size_t rank) {
    auto *graph = model->proto.mutable_graph();
    auto *t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(data_type);
    for (size_t axis = 0; axis < rank; ++axis) t->add_dims(dims[axis]);
    return static_cast<size_t>(graph->initializer_size() - 1);
}

void onnx_graph_insert_node(OnnxModel *model, size_t position, const char *name, const char *op_type,
                            const char *domain) {
    auto *nodes = model->proto.mutable_graph()->mutable_node();
    auto *added = nodes->Add();
    added->set_name(name);
    added->set_op_type(op_type);
    if (domain != nullptr && domain[0] != '\0') added->set_domain(domain);
    // Bubble the new node from the end down to `position`.
    for (int index = nodes->size() - 1; index > static_cast<int>(position); --index) nodes->SwapElements(index, index - 1);
    model->nodeMetadata.insert(model->nodeMetadata.begin() + static_cast<std::ptrdiff_t>(position), std::vector<Entry>());
}

void onnx_node_add_input(OnnxModel *model, size_t node_index, const char *name) {
    mutableNode(model, node_index).add_input(name);
}
void onnx_node_add_output(OnnxModel *model, size_t node_index, const char *name) {
    mutableNode(model, node_index).add_output(name);
}
void onnx_node_set_input(OnnxModel *model, size_t node_index, size_t slot, const char *name) {
    mutableNode(model, node_index).set_input(static_cast<int>(slot), name);
}
void onnx_node_set_output(OnnxModel *model, size_t node_index, size_t slot, const char *name) {
    mutableNode(model, node_index).set_output(static_cast<int>(slot), name);
}

void onnx_graph_add_input(OnnxModel *model, const char *name, int32_t elem_type, const int64_t *dims,
                          const char *const *dim_params, size_t rank) {
    auto *input = model->proto.mutable_graph()->add_input();
    input->set_name(name);
    auto *tensorType = input->mutable_type()->mutable_tensor_type();
    tensorType->set_elem_type(elem_type);
    auto *shape = tensorType->mutable_shape();
    for (size_t axis = 0; axis < rank; ++axis) {
        auto *dimension = shape->add_dim();
        if (dim_params != nullptr && dim_params[axis] != nullptr) {
            dimension->set_dim_param(dim_params[axis]);
        } else {
            dimension->set_dim_value(dims[axis]);
        }
    }
}

void onnx_model_set_metadata(OnnxModel *model, const char *key, const char *value) {
    auto *entries = model->proto.mutable_metadata_props();
    for (auto &entry : *entries) {
        if (entry.key() == key) {
            entry.set_value(value);
            return;
        }
    }
    auto *entry = entries->Add();
    entry->set_key(key);
    entry->set_value(value);
}

}  // extern "C"
