#include "iot/command_dispatch/service_spec.h"

int main(int argc, char** argv) {
  return iot::common::RunService(argc, argv, iot::command_dispatch::Spec(),
                                 iot::command_dispatch::ReadConfig, iot::command_dispatch::Wire);
}
