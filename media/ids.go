package media

import (
	"crypto/rand"
	"encoding/binary"
)

// crockford is Crockford's base32 alphabet: no I, L, O or U.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// connectionIDLength is the length of every ID newID returns.
const connectionIDLength = 26

// newID returns 128 random bits as 26 upper-case Crockford base32
// characters, the form Sora gives connection, client, bundle and session
// IDs.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on Linux
	}
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	var out [connectionIDLength]byte
	// 26 characters hold 130 bits: the first carries the top 3 bits only.
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
