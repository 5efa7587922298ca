# dynip's %postun ($1: 0 on erase, 1 on upgrade). An erase keeps /etc/dynip (the config
# and its key) and /var/lib/dynip (the store), as Fedora packages keep what they did not
# install, and the dynip user; `rm -rf /etc/dynip /var/lib/dynip` deletes them. An
# upgrade restarts what was running, as %systemd_postun_with_restart does.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart dynip.service dynip-client.timer >/dev/null 2>&1 || :
    fi
fi
exit 0
