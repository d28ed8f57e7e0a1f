#include "iot/shadow/service_spec.h"

int main(int argc, char** argv) {
  return iot::common::RunService(argc, argv, iot::shadow::Spec(), iot::shadow::ReadConfig,
                                 iot::shadow::Wire);
}
