// A small C API over libonnx's generated ModelProto (ONNX 1.12, libprotobuf 3.21).
//
// The model handle owns the parsed proto; every pointer returned by an accessor points into it and stays valid
// until `onnx_model_free`. Sub-objects (value infos, tensors, nodes, attributes) are passed around as opaque
// pointers of the matching type. Fields newer than ONNX 1.12 survive parsing as unknown fields, so
// `onnx_model_serialize` writes them back unchanged; `NodeProto.metadata_props` (field 9) is decoded from there.
#ifndef ONNX_BRIDGE_H
#define ONNX_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct OnnxModel OnnxModel;
typedef struct OnnxValueInfo OnnxValueInfo;
typedef struct OnnxTensor OnnxTensor;
typedef struct OnnxNode OnnxNode;
typedef struct OnnxAttribute OnnxAttribute;

/// A byte string inside the model (not NUL-terminated in general).
typedef struct {
    const char *data;
    size_t length;
} OnnxBytes;

/// Parses a serialized ModelProto. On failure returns NULL and sets *error to a malloc'ed message
/// (free it with `onnx_free_string`).
OnnxModel *onnx_model_parse(const void *data, size_t length, char **error);
void onnx_model_free(OnnxModel *model);
void onnx_free_string(char *string);

/// Serializes the model (with every unknown field) into a malloc'ed buffer; free with `onnx_free_buffer`.
/// Returns 0 on success.
int onnx_model_serialize(const OnnxModel *model, void **data, size_t *length, char **error);
void onnx_free_buffer(void *data);

/// Runs ONNX 1.12's C++ checker (`onnx::checker::check_model`) on the model file at `path` (so that external
/// data is checked relative to its folder). Returns 0 when it passes; otherwise 1 and the checker's message in
/// *error.
int onnx_check_model_file(const char *path, char **error);

int64_t onnx_model_ir_version(const OnnxModel *model);
OnnxBytes onnx_model_producer_name(const OnnxModel *model);
OnnxBytes onnx_model_producer_version(const OnnxModel *model);
OnnxBytes onnx_model_domain(const OnnxModel *model);
int64_t onnx_model_model_version(const OnnxModel *model);
OnnxBytes onnx_model_doc_string(const OnnxModel *model);
int onnx_model_has_graph(const OnnxModel *model);

size_t onnx_model_opset_count(const OnnxModel *model);
OnnxBytes onnx_model_opset_domain(const OnnxModel *model, size_t index);
int64_t onnx_model_opset_version(const OnnxModel *model, size_t index);

size_t onnx_model_metadata_count(const OnnxModel *model);
OnnxBytes onnx_model_metadata_key(const OnnxModel *model, size_t index);
OnnxBytes onnx_model_metadata_value(const OnnxModel *model, size_t index);

OnnxBytes onnx_graph_name(const OnnxModel *model);

/// Which list of value infos: graph inputs, graph outputs, or intermediate `value_info`.
typedef enum { ONNX_VALUES_INPUT = 0, ONNX_VALUES_OUTPUT = 1, ONNX_VALUES_INTERMEDIATE = 2 } OnnxValueList;
size_t onnx_graph_value_count(const OnnxModel *model, OnnxValueList list);
const OnnxValueInfo *onnx_graph_value(const OnnxModel *model, OnnxValueList list, size_t index);

OnnxBytes onnx_value_name(const OnnxValueInfo *value);
/// 1 when the value's type is a tensor type; other types (sequences, maps, optionals) return 0.
int onnx_value_is_tensor(const OnnxValueInfo *value);
int32_t onnx_value_elem_type(const OnnxValueInfo *value);
/// 1 when a shape is present (a rank-0 shape is present and has no dims).
int onnx_value_has_shape(const OnnxValueInfo *value);
size_t onnx_value_rank(const OnnxValueInfo *value);
/// Dimension kind: 0 = unknown, 1 = fixed value, 2 = symbolic parameter.
int onnx_value_dim_kind(const OnnxValueInfo *value, size_t axis);
int64_t onnx_value_dim_value(const OnnxValueInfo *value, size_t axis);
OnnxBytes onnx_value_dim_param(const OnnxValueInfo *value, size_t axis);

size_t onnx_graph_initializer_count(const OnnxModel *model);
const OnnxTensor *onnx_graph_initializer(const OnnxModel *model, size_t index);

OnnxBytes onnx_tensor_name(const OnnxTensor *tensor);
int32_t onnx_tensor_data_type(const OnnxTensor *tensor);
size_t onnx_tensor_rank(const OnnxTensor *tensor);
int64_t onnx_tensor_dim(const OnnxTensor *tensor, size_t axis);
/// 1 when `data_location` is EXTERNAL.
int onnx_tensor_is_external(const OnnxTensor *tensor);
size_t onnx_tensor_external_count(const OnnxTensor *tensor);
OnnxBytes onnx_tensor_external_key(const OnnxTensor *tensor, size_t index);
OnnxBytes onnx_tensor_external_value(const OnnxTensor *tensor, size_t index);
int onnx_tensor_has_raw_data(const OnnxTensor *tensor);
OnnxBytes onnx_tensor_raw_data(const OnnxTensor *tensor);
/// The typed repeated fields, as pointers and element counts (NULL and 0 when empty).
const float *onnx_tensor_float_data(const OnnxTensor *tensor, size_t *count);
const int32_t *onnx_tensor_int32_data(const OnnxTensor *tensor, size_t *count);
const int64_t *onnx_tensor_int64_data(const OnnxTensor *tensor, size_t *count);
const double *onnx_tensor_double_data(const OnnxTensor *tensor, size_t *count);
const uint64_t *onnx_tensor_uint64_data(const OnnxTensor *tensor, size_t *count);
size_t onnx_tensor_string_count(const OnnxTensor *tensor);

size_t onnx_graph_node_count(const OnnxModel *model);
const OnnxNode *onnx_graph_node(const OnnxModel *model, size_t index);

OnnxBytes onnx_node_name(const OnnxNode *node);
OnnxBytes onnx_node_op_type(const OnnxNode *node);
OnnxBytes onnx_node_domain(const OnnxNode *node);
size_t onnx_node_input_count(const OnnxNode *node);
OnnxBytes onnx_node_input(const OnnxNode *node, size_t index);
size_t onnx_node_output_count(const OnnxNode *node);
OnnxBytes onnx_node_output(const OnnxNode *node, size_t index);
size_t onnx_node_attribute_count(const OnnxNode *node);
const OnnxAttribute *onnx_node_attribute(const OnnxNode *node, size_t index);
/// `metadata_props` (NodeProto field 9) of the graph's node `node_index`, decoded when the model was parsed from
/// the unknown fields libonnx 1.12 keeps it in.
size_t onnx_node_metadata_count(const OnnxModel *model, size_t node_index);
OnnxBytes onnx_node_metadata_key(const OnnxModel *model, size_t node_index, size_t index);
OnnxBytes onnx_node_metadata_value(const OnnxModel *model, size_t node_index, size_t index);

/// Attribute kinds, as `AttributeProto.AttributeType`.
typedef enum {
    ONNX_ATTRIBUTE_UNDEFINED = 0,
    ONNX_ATTRIBUTE_FLOAT = 1,
    ONNX_ATTRIBUTE_INT = 2,
    ONNX_ATTRIBUTE_STRING = 3,
    ONNX_ATTRIBUTE_TENSOR = 4,
    ONNX_ATTRIBUTE_GRAPH = 5,
    ONNX_ATTRIBUTE_FLOATS = 6,
    ONNX_ATTRIBUTE_INTS = 7,
    ONNX_ATTRIBUTE_STRINGS = 8,
    ONNX_ATTRIBUTE_TENSORS = 9,
    ONNX_ATTRIBUTE_GRAPHS = 10,
    ONNX_ATTRIBUTE_SPARSE_TENSOR = 11,
    ONNX_ATTRIBUTE_SPARSE_TENSORS = 12,
    ONNX_ATTRIBUTE_TYPE_PROTO = 13,
    ONNX_ATTRIBUTE_TYPE_PROTOS = 14,
} OnnxAttributeType;

OnnxBytes onnx_attribute_name(const OnnxAttribute *attribute);
/// The declared type; for files that omit it (old exporters), inferred from which field is set.
OnnxAttributeType onnx_attribute_type(const OnnxAttribute *attribute);
float onnx_attribute_float(const OnnxAttribute *attribute);
int64_t onnx_attribute_int(const OnnxAttribute *attribute);
OnnxBytes onnx_attribute_string(const OnnxAttribute *attribute);
const OnnxTensor *onnx_attribute_tensor(const OnnxAttribute *attribute);
const float *onnx_attribute_floats(const OnnxAttribute *attribute, size_t *count);
const int64_t *onnx_attribute_ints(const OnnxAttribute *attribute, size_t *count);
size_t onnx_attribute_strings_count(const OnnxAttribute *attribute);
OnnxBytes onnx_attribute_strings_element(const OnnxAttribute *attribute, size_t index);


// MARK: Editing (for export). Every editing call changes the model in place; pointers returned earlier by the
// accessors above may be invalidated by an edit of the same list, so re-read after editing.

/// A deep copy of the model (every field, unknown fields included), to edit without touching the original.
OnnxModel *onnx_model_clone(const OnnxModel *model);

/// Replaces initializer `index`'s values with `length` bytes of `raw_data` (little-endian, its own data type),
/// stored inline: the typed fields, `external_data` and `data_location` are cleared.
void onnx_initializer_set_raw_data(OnnxModel *model, size_t index, const void *data, size_t length);
/// Points initializer `index` at `length` bytes at `offset` of the file `location` (relative to the model's
/// folder): `data_location = EXTERNAL`, `external_data = {location, offset, length}`, inline values cleared.
/// Other `external_data` keys (a `checksum` of the old bytes) are dropped.
void onnx_initializer_set_external(OnnxModel *model, size_t index, const char *location, int64_t offset,
                                   int64_t length);
/// Appends an initializer with no values yet (set them with one of the two calls above); returns its index.
size_t onnx_graph_add_initializer(OnnxModel *model, const char *name, int32_t data_type, const int64_t *dims,
                                  size_t rank);

/// Inserts an empty node (no inputs, outputs or attributes) at `position` of the node list; nodes from there on
/// move up by one.
void onnx_graph_insert_node(OnnxModel *model, size_t position, const char *name, const char *op_type,
                            const char *domain);
void onnx_node_add_input(OnnxModel *model, size_t node_index, const char *name);
void onnx_node_add_output(OnnxModel *model, size_t node_index, const char *name);
void onnx_node_set_input(OnnxModel *model, size_t node_index, size_t slot, const char *name);
void onnx_node_set_output(OnnxModel *model, size_t node_index, size_t slot, const char *name);

/// Appends a tensor-typed graph input. Axis `i` is symbolic when `dim_params[i]` is non-NULL, else fixed at
/// `dims[i]`.
void onnx_graph_add_input(OnnxModel *model, const char *name, int32_t elem_type, const int64_t *dims,
                          const char *const *dim_params, size_t rank);

/// Sets model-level `metadata_props[key] = value`, replacing an entry with that key or appending one.
void onnx_model_set_metadata(OnnxModel *model, const char *key, const char *value);

#ifdef __cplusplus
}
#endif

#endif
