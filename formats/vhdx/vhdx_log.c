/* SPDX-License-Identifier: MIT */
/*
 * VHDX log ([MS-VHDX] 2.3): replay of the active sequence, and writing.
 *
 * Writing.  Every metadata update (BAT sectors, the metadata region) goes
 * through the log: one entry holding the new 4 KiB sectors is written at
 * the start of the log and flushed, then the sectors are written in place.
 * The next entry overwrites the previous one only after a flush that made
 * the previous in-place writes durable (vhdx_commit syncs first), so the
 * log holds at most one entry that may still be needed, and it is its own
 * tail.  A clean close sets the header's log GUID to zero.
 *
 * Replay.  Every valid entry of the header's log GUID is found; the head
 * is the entry with the highest sequence number whose chain back to its
 * tail is complete, and the entries from tail to head are applied in
 * order.  Writes that would land on the headers or on the log itself, and
 * log lengths or file sizes past reason, are refused as corruption.
 */
#include "vhdx_internal.h"

#include <stdlib.h>
#include <string.h>

/* A log larger than this is refused rather than read into memory. */
#define VHDX_MAX_LOG_LENGTH (256u << 20)
/* Replay never grows the file past this (twice the largest disk). */
#define VHDX_MAX_FILE_OFFSET (2 * VHDX_MAX_SIZE)

struct vhdx_log_candidate {
	uint32_t pos;
	uint32_t length;
	uint32_t tail;
	uint64_t sequence;
};

uint32_t vhdx_log_capacity(const struct vhdx_state *s)
{
	uint32_t sectors = s->header.log_length / VHDX_LOG_SECTOR;
	uint32_t n = sectors;

	/* The largest n with descriptor sectors + n <= sectors. */
	while (n && vhdx_log_descriptor_sectors(n) + n > sectors)
		n--;
	return n;
}

/* The entry at pos copied out of the circular log (wrapping at the end). */
static void log_copy(const uint8_t *log, uint32_t log_length, uint32_t pos,
		     uint8_t *out, uint32_t len)
{
	uint32_t first = MIN(len, log_length - pos);

	memcpy(out, log + pos, first);
	if (first < len)
		memcpy(out + first, log, len - first);
}

/* Is the entry at pos valid?  Fills c; entry is a scratch buffer of
 * log_length bytes. */
static bool log_entry_valid(const struct vhdx_state *s, const uint8_t *log,
			    uint32_t pos, uint8_t *entry,
			    struct vhdx_log_candidate *c)
{
	uint32_t log_length = s->header.log_length;
	struct vhdx_log_header h;

	vhdx_log_header_decode(log + pos, &h);
	if (h.signature != VHDX_LOG_ENTRY_SIGNATURE ||
	    !vhdx_guid_equal(&h.log_guid, &s->header.log_guid) ||
	    !h.entry_length || h.entry_length % VHDX_LOG_SECTOR ||
	    h.entry_length > log_length || h.tail % VHDX_LOG_SECTOR ||
	    h.tail >= log_length || !h.sequence)
		return false;
	uint64_t dsec = vhdx_log_descriptor_sectors(h.descriptor_count);

	if (h.descriptor_count > log_length / VHDX_LOG_DESCRIPTOR_SIZE ||
	    dsec * VHDX_LOG_SECTOR > h.entry_length)
		return false;
	log_copy(log, log_length, pos, entry, h.entry_length);
	if (!vhdx_checksum_ok(entry, h.entry_length, 4))
		return false;
	uint64_t data_sectors = 0;

	for (uint32_t i = 0; i < h.descriptor_count; i++) {
		struct vhdx_log_descriptor d;

		vhdx_log_descriptor_decode(
			entry + VHDX_LOG_HEADER_SIZE +
				(size_t)i * VHDX_LOG_DESCRIPTOR_SIZE,
			&d);
		if (d.sequence != h.sequence)
			return false;
		if (d.signature == VHDX_LOG_ZERO_SIGNATURE)
			continue;
		if (d.signature != VHDX_LOG_DESC_SIGNATURE)
			return false;
		uint64_t at = (dsec + data_sectors) * VHDX_LOG_SECTOR;

		if (at + VHDX_LOG_SECTOR > h.entry_length)
			return false;
		const uint8_t *sec = entry + at;

		if (vhdx_get32(sec) != VHDX_LOG_DATA_SIGNATURE ||
		    vhdx_get32(sec + 4) != (uint32_t)(h.sequence >> 32) ||
		    vhdx_get32(sec + 4092) != (uint32_t)h.sequence)
			return false;
		data_sectors++;
	}
	c->pos = pos;
	c->length = h.entry_length;
	c->tail = h.tail;
	c->sequence = h.sequence;
	return true;
}

static int candidate_at(const struct vhdx_log_candidate *c, int n, uint32_t pos)
{
	for (int i = 0; i < n; i++)
		if (c[i].pos == pos)
			return i;
	return -1;
}

/* Fills order[] with the candidates from tail to head; returns the count
 * or 0 when the chain ending at head is incomplete. */
static int log_chain(const struct vhdx_state *s,
		     const struct vhdx_log_candidate *c, int n, int head,
		     int *order)
{
	uint32_t log_length = s->header.log_length;
	uint32_t pos = c[head].tail;
	uint64_t walked = 0;
	int count = 0;
	uint64_t expect = 0;

	for (;;) {
		int i = candidate_at(c, n, pos);

		if (i < 0 || count == n)
			return 0;
		if (count && c[i].sequence != expect)
			return 0;
		if (c[i].sequence > c[head].sequence)
			return 0;
		order[count++] = i;
		expect = c[i].sequence + 1;
		walked += c[i].length;
		if (walked > log_length)
			return 0;
		if (i == head)
			return count;
		pos = (uint32_t)((pos + c[i].length) % log_length);
	}
}

/* Is [off, off+len) a place a log entry may write? */
static bool log_target_ok(const struct vhdx_state *s, uint64_t off,
			  uint64_t len)
{
	uint64_t log_end = s->header.log_offset + s->header.log_length;

	if (off % VHDX_LOG_SECTOR || len % VHDX_LOG_SECTOR || !len ||
	    off > VHDX_MAX_FILE_OFFSET || len > VHDX_MAX_FILE_OFFSET - off)
		return false;
	if (off < VHDX_REGION_TABLE1_OFFSET)
		return false; /* file identifier and headers */
	if (off < log_end && off + len > s->header.log_offset)
		return false;
	return true;
}

static int overlay_add(struct vhdx_state *s, uint64_t off, uint64_t len,
		       const uint8_t *data)
{
	struct vhdx_overlay *o =
		realloc(s->overlay, (size_t)(s->noverlay + 1) * sizeof(*o));

	if (!o)
		return -ENOMEM;
	s->overlay = o;
	o[s->noverlay].offset = off;
	o[s->noverlay].length = len;
	o[s->noverlay].data = NULL;
	if (data) {
		o[s->noverlay].data = malloc(VHDX_LOG_SECTOR);
		if (!o[s->noverlay].data)
			return -ENOMEM;
		memcpy(o[s->noverlay].data, data, VHDX_LOG_SECTOR);
	}
	s->noverlay++;
	return 0;
}

static int log_apply_entry(struct img *img, struct vhdx_state *s,
			   const uint8_t *entry, bool apply,
			   uint64_t *last_file_offset)
{
	struct vhdx_log_header h;
	uint8_t *sector = NULL;
	uint64_t data_at;
	int ret = 0;

	vhdx_log_header_decode(entry, &h);
	data_at = (uint64_t)vhdx_log_descriptor_sectors(h.descriptor_count) *
		  VHDX_LOG_SECTOR;
	if (h.last_file_offset > VHDX_MAX_FILE_OFFSET)
		return img_error(img, -EINVAL,
				 "log entry %llu gives an impossible file "
				 "size %llu",
				 (unsigned long long)h.sequence,
				 (unsigned long long)h.last_file_offset);
	if (h.last_file_offset > *last_file_offset)
		*last_file_offset = h.last_file_offset;
	sector = malloc(VHDX_LOG_SECTOR);
	if (!sector)
		return -ENOMEM;
	for (uint32_t i = 0; i < h.descriptor_count && !ret; i++) {
		struct vhdx_log_descriptor d;

		vhdx_log_descriptor_decode(
			entry + VHDX_LOG_HEADER_SIZE +
				(size_t)i * VHDX_LOG_DESCRIPTOR_SIZE,
			&d);
		uint64_t len = d.signature == VHDX_LOG_ZERO_SIGNATURE
				       ? d.leading_or_length
				       : VHDX_LOG_SECTOR;

		if (!log_target_ok(s, d.file_offset, len)) {
			ret = img_error(img, -EINVAL,
					"log entry %llu writes to %llu+%llu, "
					"outside the places a log may update",
					(unsigned long long)h.sequence,
					(unsigned long long)d.file_offset,
					(unsigned long long)len);
			break;
		}
		if (d.signature == VHDX_LOG_ZERO_SIGNATURE) {
			ret = apply ? img_file_zero_range(&s->file,
							  d.file_offset, len)
				    : overlay_add(s, d.file_offset, len, NULL);
			continue;
		}
		const uint8_t *src = entry + data_at;

		data_at += VHDX_LOG_SECTOR;
		vhdx_put64(sector, d.leading_or_length);
		memcpy(sector + 8, src + 8, 4084);
		vhdx_put32(sector + 4092, d.trailing);
		ret = apply ? img_file_pwrite(&s->file, sector, VHDX_LOG_SECTOR,
					      d.file_offset)
			    : overlay_add(s, d.file_offset, VHDX_LOG_SECTOR,
					  sector);
		if (apply && !ret &&
		    d.file_offset + VHDX_LOG_SECTOR > s->file_size)
			s->file_size = d.file_offset + VHDX_LOG_SECTOR;
	}
	free(sector);
	return ret;
}

int vhdx_log_replay(struct img *img, struct vhdx_state *s, bool apply,
		    bool *found)
{
	uint32_t log_length = s->header.log_length;
	struct vhdx_log_candidate *c = NULL;
	uint8_t *log = NULL, *entry = NULL;
	int *order = NULL, n = 0, ret = 0;

	*found = false;
	if (log_length > VHDX_MAX_LOG_LENGTH)
		return img_error(img, -EFBIG,
				 "log of %u bytes is larger than the %u this "
				 "driver replays",
				 log_length, VHDX_MAX_LOG_LENGTH);
	log = malloc(log_length);
	entry = malloc(log_length);
	c = calloc(log_length / VHDX_LOG_SECTOR, sizeof(*c));
	order = calloc(log_length / VHDX_LOG_SECTOR, sizeof(*order));
	if (!log || !entry || !c || !order) {
		ret = -ENOMEM;
		goto out;
	}
	ret = img_file_pread(&s->file, log, log_length, s->header.log_offset);
	if (ret)
		goto out;
	for (uint32_t pos = 0; pos < log_length; pos += VHDX_LOG_SECTOR)
		if (log_entry_valid(s, log, pos, entry, &c[n]))
			n++;

	/* The head: the highest sequence number with a complete chain. */
	int best = -1, count = 0;

	for (int tries = 0; tries < n; tries++) {
		int head = -1;

		for (int i = 0; i < n; i++)
			if (c[i].sequence &&
			    (head < 0 || c[i].sequence > c[head].sequence))
				head = i;
		if (head < 0)
			break;
		count = log_chain(s, c, n, head, order);
		if (count) {
			best = head;
			break;
		}
		c[head].sequence = 0; /* not a head; try the next */
	}
	if (best < 0)
		goto out; /* nothing valid: an empty log */

	uint64_t last_file_offset = 0;

	*found = true;
	for (int k = 0; k < count && !ret; k++) {
		log_copy(log, log_length, c[order[k]].pos, entry,
			 c[order[k]].length);
		ret = log_apply_entry(img, s, entry, apply, &last_file_offset);
	}
	if (ret)
		goto out;
	s->log_sequence = c[best].sequence;
	if (apply) {
		if (last_file_offset > s->file_size) {
			ret = img_file_truncate(&s->file, last_file_offset);
			if (ret)
				goto out;
			s->file_size = last_file_offset;
		}
		ret = img_file_sync(&s->file);
	}
out:
	free(log);
	free(entry);
	free(c);
	free(order);
	return ret;
}

int vhdx_log_write(struct img *img, struct vhdx_state *s,
		   const struct vhdx_log_write *w, uint32_t n)
{
	uint32_t dsec = vhdx_log_descriptor_sectors(n);
	uint64_t len = ((uint64_t)dsec + n) * VHDX_LOG_SECTOR;
	struct vhdx_log_header h = { 0 };
	uint8_t *entry;
	int ret;

	if (len > s->header.log_length)
		return img_error(img, -ENOSPC,
				 "log entry of %u sectors does not fit in the "
				 "%u-byte log",
				 n, s->header.log_length);
	entry = calloc(1, (size_t)len);
	if (!entry)
		return -ENOMEM;
	h.entry_length = (uint32_t)len;
	h.tail = 0; /* the entry at the start of the log is its own tail */
	h.sequence = ++s->log_sequence;
	h.descriptor_count = n;
	h.log_guid = s->header.log_guid;
	h.flushed_file_offset = s->file_size;
	h.last_file_offset = s->file_size;
	vhdx_log_header_encode(&h, entry);
	for (uint32_t i = 0; i < n; i++) {
		struct vhdx_log_descriptor d = {
			.signature = VHDX_LOG_DESC_SIGNATURE,
			.trailing = vhdx_get32(w[i].data + 4092),
			.leading_or_length = vhdx_get64(w[i].data),
			.file_offset = w[i].offset,
			.sequence = h.sequence,
		};
		uint8_t *sec = entry + ((size_t)dsec + i) * VHDX_LOG_SECTOR;

		vhdx_log_descriptor_encode(
			&d, entry + VHDX_LOG_HEADER_SIZE +
				    (size_t)i * VHDX_LOG_DESCRIPTOR_SIZE);
		vhdx_put32(sec, VHDX_LOG_DATA_SIGNATURE);
		vhdx_put32(sec + 4, (uint32_t)(h.sequence >> 32));
		memcpy(sec + 8, w[i].data + 8, 4084);
		vhdx_put32(sec + 4092, (uint32_t)h.sequence);
	}
	vhdx_checksum_set(entry, (size_t)len, 4);
	ret = img_file_pwrite(&s->file, entry, (size_t)len,
			      s->header.log_offset);
	if (!ret)
		ret = img_file_sync(&s->file);
	free(entry);
	return ret;
}
