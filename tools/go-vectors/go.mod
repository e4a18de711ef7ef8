module spike-go-vectors

go 1.26

require (
	github.com/cloudflare/circl v1.6.3
	github.com/spiffe/spike-sdk-go v0.19.9
)

require (
	github.com/bwesterb/go-ristretto v1.2.3 // indirect
	golang.org/x/crypto v0.45.0 // indirect
	golang.org/x/sys v0.38.0 // indirect
)
