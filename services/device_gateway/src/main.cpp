#include "iot/device_gateway/service_spec.h"

int main(int argc, char** argv) {
  return iot::common::RunService(argc, argv, iot::device_gateway::Spec(),
                                 iot::device_gateway::ReadConfig, iot::device_gateway::Wire);
}
