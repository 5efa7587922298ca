# dynip's %preun ($1: 0 on erase, 1 on upgrade): on erase, disable and stop the units,
# as Fedora's %systemd_preun does. An upgrade leaves them running (%postun restarts).
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now dynip.service dynip-client.timer >/dev/null 2>&1 || :
    systemctl stop dynip-client.service >/dev/null 2>&1 || :
fi
exit 0
