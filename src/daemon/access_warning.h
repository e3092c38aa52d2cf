// The warning that anonymous access is on: logged at start and after every reload that changes
// the identities, naming every listener it applies to (protocol, TLS, HTTP, HTTPS).
#pragma once

#include "daemon/config.h"

namespace witmq::daemon {

// Logs, as a warning, which listeners let clients in without credentials and with which
// grants, louder for a listener that is not on a loopback address; an info line when anonymous
// access is off.
void warn_about_anonymous(const Config& config);

}  // namespace witmq::daemon
