// A protobuf message as nlohmann::json, by protobuf's proto3 JSON mapping with the .proto field
// names (snake_case) and every field printed, defaults included. (64-bit integers are JSON strings
// there.)
#ifndef BRT_CLIENT_COMMANDS_PROTO_JSON_H_
#define BRT_CLIENT_COMMANDS_PROTO_JSON_H_

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include "nlohmann/json.hpp"

namespace brt::client {

inline nlohmann::json ProtoToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, options).ok()) return nullptr;
  return nlohmann::json::parse(out, nullptr, false);
}

}  // namespace brt::client

#endif  // BRT_CLIENT_COMMANDS_PROTO_JSON_H_
