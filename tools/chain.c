/* SPDX-License-Identifier: MIT */
/* Backing-chain helpers: see chain.h. */
#include "tools/chain.h"
#include "tools/cmdline.h"

#include "img.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int chain_length(struct img *img)
{
	int n = 0;

	for (; img; img = img_backing(img))
		n++;
	return n;
}

bool chain_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int chain_copy_layer(struct img *from, struct img *to, bool only_unallocated)
{
	int ret = img_copy_layer(
		from, to, only_unallocated ? IMG_COPY_ONLY_UNALLOCATED : 0);

	if (ret < 0)
		cmdline_img_error(to, ret);
	return ret;
}

char *chain_parent_reference(const char *child, const char *parent)
{
	return img_parent_reference(child, parent);
}

int chain_refresh_child(const char *child_path, const char *child_format,
			const char *parent_path, const char *parent_format,
			const char *given_ref)
{
	char errbuf[IMG_ERRMSG_MAX];
	int ret = img_record_parent(child_path, child_format, parent_path,
				    parent_format, given_ref, errbuf,
				    sizeof(errbuf));

	if (ret < 0)
		tool_error("%s", errbuf);
	return ret;
}
