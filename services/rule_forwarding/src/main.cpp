#include "iot/rule_forwarding/service_spec.h"

int main(int argc, char** argv) {
  return iot::common::RunService(argc, argv, iot::rule_forwarding::Spec(),
                                 iot::rule_forwarding::ReadConfig, iot::rule_forwarding::Wire);
}
