#pragma once

#include <memory>

#include "iot/common/postgres.h"
#include "iot/device_gateway/ports.h"

namespace iot::device_gateway {

/// DeadLetterStore over PostgreSQL: table device_gateway.dead_letters (migrations/).
std::shared_ptr<DeadLetterStore> MakePgDeadLetterStore(std::shared_ptr<common::PgPool> pool);

}  // namespace iot::device_gateway
