#!/bin/sh
# pfSense starts /usr/local/etc/rc.d/*.sh at boot with "start" and calls them with "stop"
# at shutdown; it does not run the rc(8) boot sequence for packages. This hands over to the
# real rc script, which honours vigie_agent_enable from /etc/rc.conf.local.
exec /usr/local/etc/rc.d/vigie_agent "$@"
