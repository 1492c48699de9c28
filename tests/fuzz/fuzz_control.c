/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: what a hostile client or a hand-edited file gives
 * imgvm as text.  Byte 0 modulo 3 chooses the parser: 0 = a control
 * request line (control_parse_request), 1 = a VM definition (vmdef_parse;
 * one that parses is turned into boot's argv and run through the boot
 * option parser, as imgvm start does), 2 = an OVF descriptor
 * (ova_parse_descriptor) (its complaints go to stderr;
 * make fuzz filters them out).
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * The boot option parser reaches into the display's and the network's
 * option parsers, so every imgvm source but main.c is built in.
 * fuzz-sources: vmm/[!m]*.c vmm/devices/*.c vmm/net/*.c vmm/display/*.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/control.h"
#include "vmm/options.h"
#include "vmm/ova.h"
#include "vmm/vmdef.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];

	if (!size)
		return 0;
	if (data[0] % 3 == 2) {
		struct ova_machine m;

		if (ova_parse_descriptor((const char *)data + 1, size - 1, &m,
					 err, sizeof(err)) == 0 &&
		    m.ndisks > 8)
			abort();
	} else if (data[0] % 3 == 0) {
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
