//go:build unix

package config

import "syscall"

// openFilesLimit is the process's open-files limit (its soft limit, which Go
// raises to the hard limit at start-up), or 0 when it cannot be read.
func openFilesLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}
