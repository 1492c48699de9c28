/* SPDX-License-Identifier: MIT */
/*
 * Backing-chain operations shared by commit, rebase and snapshot: copying
 * one layer's allocated data into another image, and computing the parent
 * reference to record in a child.
 */
#ifndef TOOLS_CHAIN_H
#define TOOLS_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

struct img;

/* Copy every range allocated in from's own layer (img_block_status_layer)
 * into `to` at the same offsets: data as data, allocated zeros as zeros.
 * With only_unallocated, ranges `to` has allocated in its own layer are
 * left alone (snapshot delete pulls a parent's data into its child).
 * Errors are printed; returns 0 or -errno. */
int chain_copy_layer(struct img *from, struct img *to, bool only_unallocated);

/* The text to record in `child` so that it finds `parent`: a path relative
 * to child's directory (with "../" when needed), or the absolute path when
 * that is simpler.  Returns a malloc'd string or NULL (out of memory or
 * a path that does not resolve; errno set). */
char *chain_parent_reference(const char *child, const char *parent);

/* Record parent (already existing at parent_path) again as child's backing
 * file: after parent's contents changed, formats that keep the parent's
 * identity in the child (VMDK CID, VDI modification UUID) need it, and
 * after child moved, its reference must be renewed.  ref is the text to
 * record, NULL for chain_parent_reference().  Errors are printed; returns
 * 0 or -errno. */
int chain_refresh_child(const char *child_path, const char *child_format,
			const char *parent_path, const char *parent_format,
			const char *ref);

/* Do two paths name the same file? */
bool chain_same_file(const char *a, const char *b);

/* Number of layers (1 for an image without a parent). */
int chain_length(struct img *img);

#endif
