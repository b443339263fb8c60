//go:build !unix

package config

// openFilesLimit is unknown here; PRESENCE_MAX_CONNS=auto then means no limit.
func openFilesLimit() uint64 { return 0 }
