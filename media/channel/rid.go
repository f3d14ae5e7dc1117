package channel

// RID names a simulcast layer as Sora does: r0 (lowest) to r2 (highest), or
// none for no video at all.
type RID string

// The layers, and none.
const (
	RIDNone RID = "none"
	R0      RID = "r0"
	R1      RID = "r1"
	R2      RID = "r2"
)

// Layers is the number of simulcast layers a sender may send.
const Layers = 3

// ParseRID reads none, r0, r1 or r2.
func ParseRID(s string) (RID, bool) {
	switch r := RID(s); r {
	case RIDNone, R0, R1, R2:
		return r, true
	}
	return "", false
}

// Layer is the layer index of r: 0 for r0 up to 2 for r2, and -1 for none
// (or anything else).
func (r RID) Layer() int {
	switch r {
	case R0:
		return 0
	case R1:
		return 1
	case R2:
		return 2
	}
	return -1
}

// LayerRID is the RID of layer index i, or none when i is not a layer.
func LayerRID(i int) RID {
	switch i {
	case 0:
		return R0
	case 1:
		return R1
	case 2:
		return R2
	}
	return RIDNone
}
