// A list of servers as users type it (RDMAPS_SERVERS, the C ABI's
// options.servers, rdmaps-train --servers-list): one reader, so that every
// entry point refuses the same entries with the same words.
#pragma once

#include <string>
#include <vector>

namespace rdmaps::launch {

/// The entries of "host:port,host:port" as typed, each a server's own address
/// that workers dial: an entry the servers would read otherwise than the
/// workers (an empty one dropped shifts the indices, port 0 is a port of the
/// system's choosing, a second spelling of one port or a duplicate names one
/// server twice) is refused. Throws Error(kInvalidArgument) naming `source`
/// (the variable or flag the list came from) and the entry.
std::vector<std::string> server_list(const std::string& text, const std::string& source);
/// The same checks for entries given one by one (ClientOptions::servers);
/// an entry holding a comma is refused too.
void check_server_list(const std::vector<std::string>& entries, const std::string& source);

}  // namespace rdmaps::launch
