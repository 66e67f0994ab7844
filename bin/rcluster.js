#!/usr/bin/env node
'use strict';

require('../lib/primary/cli').main(process.argv.slice(2));
