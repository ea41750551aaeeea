//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// The decoder writes the label sets it hands out one after another into
// shared blocks of text, each set a labels.Labels viewing its own piece: a
// query over 1,000 series returning 10,000 exemplars allocates about a
// hundred blocks, not 10,000 strings.
// A labels.Labels can only be made from a string by copying it, so the view
// is made with unsafe, as Prometheus makes its own labels from byte buffers
// (yoloString). Blocks belong to one Select and are never written again once
// a set in them is handed out: no later add or Select can change returned
// labels. A caller that keeps one set keeps its block (textBlock bytes).

const textBlock = 4096

// newLabelDecoder returns a decoder whose builder, needed only without views,
// is made on first use.
func newLabelDecoder() labelDecoder { return labelDecoder{} }

func (d *labelDecoder) reset() { d.from = len(d.text) }

// room makes room for n more bytes of the set being decoded, moving its
// beginning to a new block if the current one is full.
func (d *labelDecoder) room(n int) {
	if cap(d.text)-len(d.text) >= n {
		return
	}
	partial := d.text[d.from:]
	d.text = append(make([]byte, 0, max(textBlock, 2*(len(partial)+n))), partial...)
	d.from = 0
}

// addFilled adds the label name with the n-byte value fill writes, in place.
func (d *labelDecoder) addFilled(name string, n int, fill func(dst []byte)) {
	d.room(len(name) + n + 8)
	d.text = appendSize(appendText(d.text, name), n)
	at := len(d.text)
	d.text = d.text[:at+n]
	fill(d.text[at:])
}

// decodeText decodes a short set's plain text, which in this build is the
// labels' own text. Short means every length takes one byte.
func (d *labelDecoder) decodeText(text []byte) (labels.Labels, error) {
	for i, name := 0, true; i < len(text) || !name; name = !name {
		if i == len(text) || text[i] == 255 || len(text)-i-1 < int(text[i]) {
			return labels.EmptyLabels(), errCorrupt // a view would make Prometheus misread it
		}
		i += 1 + int(text[i])
	}
	d.room(len(text))
	d.text = append(d.text, text...)
	return d.finish(), nil
}

func (d *labelDecoder) finish() labels.Labels {
	d.arena = d.arena[:0]
	t := d.text[d.from:len(d.text):len(d.text)]
	if len(t) == 0 {
		return labels.EmptyLabels()
	}
	if !viewLayoutHolds {
		// Build it by the book, and take the text back.
		addTextTo(&d.b, t)
		d.text = d.text[:d.from]
		return d.b.Labels()
	}
	return labelsView(unsafe.String(&t[0], len(t)))
}

// labelsView returns the labels whose text is text, without a copy: text must
// never change.
func labelsView(text string) labels.Labels {
	var ls labels.Labels
	*(*string)(unsafe.Pointer(&ls)) = text
	return ls
}

// labelsText returns the text of ls, without a copy; only where
// viewLayoutHolds.
func labelsText(ls labels.Labels) string { return *(*string)(unsafe.Pointer(&ls)) }

// viewLayoutHolds says a labels.Labels is its text and nothing else, as in the
// stringlabels build of Prometheus v0.315.0, so labelsView makes the labels
// that text describes and labelsText reads it in place. If an upgrade
// changes that, Select builds each set with a ScratchBuilder instead (one
// allocation per set) and encodeEach goes through Range. Only tests change
// it, never while adding to a store.
var viewLayoutHolds = func() bool {
	if !textLayoutHolds || unsafe.Sizeof(labels.Labels{}) != unsafe.Sizeof("") {
		return false
	}
	got := labelsView(probeText)
	return labels.Equal(got, probeLabels) && got.Len() == 2 && got.Get("a") == probeLabels.Get("a")
}()
