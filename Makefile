# client_proxy: build, install, test and demo.
#
#   make demo                      set up, build, and show it working
#   make demo-component            the same through the standalone component
#   make bench                     set up, build, and measure proxied against direct IQs (BENCHMARKS.md)
#   make test                      set up, build, and run every test
#   make install PLUGIN_DIR=DIR    put mod_client_proxy/ into Prosody's plugin path
#   make deb                       build build/prosody-mod-client-proxy_<version>_<arch>.deb for Debian's Prosody
#                                  and build/client-proxy-component_<version>_<arch>.deb, the standalone component
#   make plugin LUA=5.1            build for another Lua: 5.4 (default), 5.3, 5.2, 5.1, jit

LUA ?= 5.4
PLUGIN_DIR ?= /usr/local/lib/prosody/modules

lua_feature_5.4 := lua54
lua_feature_5.3 := lua53
lua_feature_5.2 := lua52
lua_feature_5.1 := lua51
lua_feature_jit := luajit
feature = $(or $(lua_feature_$(1)),$(error LUA must be one of 5.4 5.3 5.2 5.1 jit, not '$(1)'))

# The shipped library links no Lua (the `module` feature): Prosody provides it.
build_dir = target/lua-$(1)
plugin = build/lua-$(LUA)/mod_client_proxy

# Copies by rename: a running Prosody (or test) that has the library mapped
# keeps its old file instead of seeing it rewritten under it.
put = cp $(1) $(2).tmp.$$$$ && mv -f $(2).tmp.$$$$ $(2)

CARGO ?= cargo
BUSTED ?= lua5.4 /usr/bin/busted

# The busted specs and the end-to-end tests run on both Prosody versions:
# the system's 0.12 (Debian 12) and the 13 that scripts/setup fetches from
# bookworm-backports into target/prosody-13 (the testbed picks it by
# CLIENT_PROXY_PROSODY=13; the specs take its util.* by source directory).
PROSODY_VERSIONS = 0.12 13
prosody_source_0.12 := /usr/lib/prosody
prosody_source_13 := $(CURDIR)/target/prosody-13/root/usr/lib/prosody

.PHONY: all setup plugin install deb test test-lua-variants test-busted test-cargo lint demo demo-component bench clean

all: plugin

setup:
	@sh scripts/setup

plugin:
	$(CARGO) build --release --lib --no-default-features --features "module $(call feature,$(LUA))" \
		--target-dir $(call build_dir,$(LUA))
	mkdir -p $(plugin)
	$(call put,lua/mod_client_proxy.lua,$(plugin)/mod_client_proxy.lua)
	$(call put,$(call build_dir,$(LUA))/release/libclient_proxy.so,$(plugin)/client_proxy.so)

install: plugin
	mkdir -p $(PLUGIN_DIR)/mod_client_proxy
	$(call put,$(plugin)/mod_client_proxy.lua,$(PLUGIN_DIR)/mod_client_proxy/mod_client_proxy.lua)
	$(call put,$(plugin)/client_proxy.so,$(PLUGIN_DIR)/mod_client_proxy/client_proxy.so)
	@echo "Installed into $(PLUGIN_DIR)/mod_client_proxy; add \"$(PLUGIN_DIR)\" to plugin_paths"

# The Debian packages: the module, for Debian's Prosody and its Lua 5.4
# (scripts/build-deb), and the standalone component with its systemd unit
# (scripts/build-deb-component).
deb:
	$(MAKE) plugin LUA=5.4
	$(CARGO) build --release -p client-proxy-component
	sh scripts/build-deb
	sh scripts/build-deb-component

# Every Lua that Prosody supports compiles (5.3 and 5.2: checked, not
# built, as no interpreter of theirs is installed); the 5.4, 5.1 and LuaJIT
# builds load into their own interpreters and route a request.
test-lua-variants:
	@for v in 5.3:lua53:- 5.2:lua52:- 5.4:lua54:lua5.4 5.1:lua51:lua5.1 jit:luajit:luajit; do \
		lua=$${v%%:*}; rest=$${v#*:}; feature=$${rest%%:*}; interp=$${rest#*:}; \
		echo "== Lua $$lua"; \
		if [ "$$interp" = "-" ]; then \
			$(CARGO) check -q --lib --no-default-features --features "module $$feature" \
				--target-dir target/check-lua-$$lua || exit 1; \
		else \
			$(CARGO) build -q --lib --no-default-features --features "module $$feature" \
				--target-dir target/check-lua-$$lua || exit 1; \
			$$interp spec/smoke.lua target/check-lua-$$lua/debug/libclient_proxy.so || exit 1; \
		fi; \
	done

test-busted: plugin
	@for v in $(PROSODY_VERSIONS); do \
		echo "== busted on Prosody $$v"; \
		case $$v in 0.12) src=$(prosody_source_0.12) ;; 13) src=$(prosody_source_13) ;; esac; \
		CLIENT_PROXY_PROSODY_SOURCE=$$src CLIENT_PROXY_PLUGIN=$(CURDIR)/$(plugin) \
			$(BUSTED) --lpath='./spec/?.lua' spec || exit 1; \
	done

# Everything once on 0.12 (unit, model, property and end-to-end tests), then
# the end-to-end tests (the testbed package) again on 13, then the suites of
# the contract's rows on both and on ejabberd with the standalone component
# serving the host in place of the module.
component_suites = --test rows --test rows_more --test choosing --test messages --test hostile --test flood
# Sets Prosody up with mod_smacks hibernation, which the ejabberd node lacks.
prosody_only = c3_a_hibernated_resource_bounces_a_get_to_another_and_a_set_once

test-cargo: plugin deb
	@echo "== unit tests, and end-to-end on Prosody 0.12"
	CLIENT_PROXY_PROSODY=0.12 CLIENT_PROXY_PLUGIN_DIR=$(CURDIR)/build/lua-$(LUA) $(CARGO) test --workspace
	@echo "== end-to-end on Prosody 13"
	CLIENT_PROXY_PROSODY=13 CLIENT_PROXY_PLUGIN_DIR=$(CURDIR)/build/lua-$(LUA) $(CARGO) test -p client_proxy_testbed
	$(CARGO) build -p client-proxy-component
	@for v in $(PROSODY_VERSIONS); do \
		echo "== the contract's rows through the standalone component, on Prosody $$v"; \
		CLIENT_PROXY_DEPLOYMENT=component CLIENT_PROXY_PROSODY=$$v \
		CLIENT_PROXY_COMPONENT=$(CURDIR)/target/debug/client-proxy-component \
			$(CARGO) test -p client_proxy_testbed $(component_suites) || exit 1; \
	done
	@echo "== the contract's rows through the standalone component, on ejabberd"
	CLIENT_PROXY_DEPLOYMENT=ejabberd CLIENT_PROXY_COMPONENT=$(CURDIR)/target/debug/client-proxy-component \
		$(CARGO) test -p client_proxy_testbed $(component_suites) -- --skip $(prosody_only)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: setup plugin lint test-lua-variants test-busted test-cargo

# The story of testbed/src/bin/demo/ told against a throwaway Prosody: with
# the module, or (demo-component) through the standalone component on
# Prosody's component port. Exits non-zero if a promise did not hold.
demo: setup plugin
	CLIENT_PROXY_PLUGIN_DIR=$(CURDIR)/build/lua-$(LUA) $(CARGO) run --release -q -p client_proxy_testbed --bin demo

demo-component: setup plugin
	$(CARGO) build --release -q -p client-proxy-component
	CLIENT_PROXY_PLUGIN_DIR=$(CURDIR)/build/lua-$(LUA) CLIENT_PROXY_COMPONENT=$(CURDIR)/target/release/client-proxy-component \
		$(CARGO) run --release -q -p client_proxy_testbed --bin demo -- --component

# A throwaway Prosody (log level info) with the module; the load generator
# alternates direct and proxied phases and prints the table. Options:
# BENCH_ARGS="--rounds 5 ...", see `cargo run -p client_proxy_testbed --bin loadgen -- --help`.
# Choosing a resource (BENCHMARKS.md):
#   make bench BENCH_ARGS="--scenario slow-one"        random against least_in_flight, one resource 50 ms late
#   make bench BENCH_ARGS="--scenario strategy-cost"   Prosody CPU per round trip: random, least_in_flight, sticky
# The standalone component beside the module (BENCHMARKS.md):
#   make bench BENCH_ARGS="--scenario component"       random (the module) against client-proxy-component
# The spawned Prosody's collector is set as the README recommends
# (BENCH_GC= runs Prosody's default).
BENCH_ARGS ?=
BENCH_GC ?= gc = { mode = "incremental", threshold = 200, speed = 200 }
bench: setup plugin
	$(CARGO) build --release -q -p client-proxy-component
	CLIENT_PROXY_PLUGIN_DIR=$(CURDIR)/build/lua-$(LUA) $(CARGO) run --release -q -p client_proxy_testbed --bin loadgen -- \
		--spawn --log-level info $(if $(BENCH_GC),--server-option '$(BENCH_GC)') $(BENCH_ARGS)

clean:
	rm -rf build target
