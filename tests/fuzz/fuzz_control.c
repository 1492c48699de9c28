/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: what a hostile client or a hand-edited file gives
 * imgvm as text.  Byte 0 chooses the parser: even = a control request line
 * (control_parse_request), odd = a VM definition (vmdef_parse); a
 * definition that parses is turned into boot's argv and run through the
 * boot option parser, as imgvm start does (its complaints go to stderr;
 * make fuzz filters them out).
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: vmm/control_request.c vmm/vmdef.c vmm/options.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/control.h"
#include "vmm/options.h"
#include "vmm/vmdef.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];

	if (!size)
		return 0;
	if (!(data[0] & 1)) {
		struct control_request req;

		if (control_parse_request((const char *)data + 1, size - 1, &req,
					  err, sizeof(err)) == 0) {
			if (req.command > CONTROL_SENDKEYS)
				abort();
			control_request_free(&req);
		}
	} else {
		json_object *options;
		char **argv;
		int argc;

		if (vmdef_parse((const char *)data + 1, size - 1, NULL,
				&options, err, sizeof(err)))
			return 0;
		if (vmdef_to_argv(options, &argc, &argv) == 0) {
			struct boot_options opt;
			char *text = vmdef_format("fuzz", options);

			boot_options_parse(argc, argv, &opt);
			vmdef_free_argv(argc, argv);
			free(text);
		}
		json_object_put(options);
	}
	return 0;
}
