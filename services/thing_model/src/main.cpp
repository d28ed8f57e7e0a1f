#include "iot/thing_model/service_spec.h"

int main(int argc, char** argv) {
  return iot::common::RunService(argc, argv, iot::thing_model::Spec(), iot::thing_model::ReadConfig,
                                 iot::thing_model::Wire);
}
