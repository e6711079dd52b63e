// Package rahatback holds files of the repository root that the binaries
// embed.
package rahatback

import _ "embed"

// NATSConf is the default configuration of the embedded NATS server
// (nats.conf at the repository root).
//
//go:embed nats.conf
var NATSConf string
